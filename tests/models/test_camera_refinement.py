"""camera-refinement: the corrected batch is the batch of the corrected poses, and optimising
the deltas alone recovers perturbed poses of a known (analytic, frozen) scene."""

import math

import pytest
import torch

from tests.analytic_scene import AnalyticBlobs, camera, camera_batch, make_renderer
from threestudio.models.camera_refinement import CameraRefinement, axis_angle_to_matrix
from threestudio.utils.errors import ConfigError


def rigid(degrees, axis, shift):
    """A [4, 4] rotation by ``degrees`` about ``axis`` followed by the translation ``shift``."""
    axis = torch.tensor(axis, dtype=torch.float64)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = axis_angle_to_matrix(axis / axis.norm() * math.radians(degrees))
    pose[:3, 3] = torch.tensor(shift, dtype=torch.float64)
    return pose


def delta_matrix(rotation, translation):
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = axis_angle_to_matrix(torch.tensor(rotation, dtype=torch.float64))
    pose[:3, 3] = torch.tensor(translation, dtype=torch.float64)
    return pose


def pose_errors(c2w, true):
    """Per view: the camera centre's distance and the rotation angle (degrees) between poses."""
    translation = (c2w[:, :3, 3] - true[:, :3, 3]).norm(dim=-1)
    rel = c2w[:, :3, :3].transpose(1, 2) @ true[:, :3, :3]
    cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    return translation, torch.rad2deg(torch.acos(cos))


def test_axis_angle_gives_the_hand_worked_rotations():
    quarter_z = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(quarter_z, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(axis_angle_to_matrix(torch.zeros(3)), torch.eye(3))


def two_image_batch(size=5):
    """A hand-made multi-view batch: two cameras, dataset images 1 and 0."""
    c2w = torch.cat([camera(20.0, 35.0, 2.5), camera(-10.0, 160.0, 2.0)])
    return camera_batch(c2w, size, index=[1, 0])


def set_deltas(refinement, rotation, translation):
    with torch.no_grad():
        refinement.rotation.copy_(torch.as_tensor(rotation))
        refinement.translation.copy_(torch.as_tensor(translation))


def test_refined_batch_is_the_batch_of_the_corrected_poses():
    batch = two_image_batch()
    refinement = CameraRefinement({"enabled": True, "n_images": 2}).double()
    rotation = [[0.05, -0.02, 0.03], [0.0, 0.04, -0.01]]
    translation = [[0.1, 0.0, -0.05], [-0.02, 0.03, 0.07]]
    set_deltas(refinement, rotation, translation)
    out = refinement.refine_batch(batch)
    # image 1's delta for view 0, image 0's for view 1: c2w @ [R(w) | v]
    deltas = [delta_matrix(rotation[j], translation[j]) for j in (1, 0)]
    expected_c2w = torch.stack([batch["c2w"][i] @ deltas[i] for i in (0, 1)])
    torch.testing.assert_close(out["c2w"], expected_c2w)
    # rays, matrices and camera centres as the datamodule would build them for those poses
    rebuilt = camera_batch(expected_c2w, 5)
    for key in ("rays_o", "rays_d", "mvp_mtx", "camera_positions"):
        torch.testing.assert_close(out[key], rebuilt[key], msg=key)
    # what describes the nominal camera is left alone; so is the given batch
    for key in ("proj_mtx", "fovy", "light_positions", "index"):
        assert out[key] is batch[key]
    torch.testing.assert_close(batch["c2w"][0], camera(20.0, 35.0, 2.5)[0])


def test_refinement_keeps_ray_jitter_and_takes_3x4_poses():
    batch = two_image_batch()
    jitter = torch.tensor([0.01, -0.02, 0.005], dtype=torch.float64)
    batch = dict(batch, rays_o=batch["rays_o"] + jitter, c2w=batch["c2w"][:, :3])
    refinement = CameraRefinement({"enabled": True, "n_images": 2}).double()
    set_deltas(refinement, [[0.0, 0.0, 0.3], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.2, 0.0]])
    out = refinement.refine_batch(batch)
    assert out["c2w"].shape == (2, 3, 4)
    # the origin's offset from the camera centre turns with the camera (same length)
    offset = out["rays_o"] - out["camera_positions"][:, None, None, :]
    torch.testing.assert_close(offset.norm(dim=-1), jitter.norm().expand(2, 5, 5))
    # view 0 (image 1) only moved: its jitter in world axes is unchanged; view 1 (image 0)
    # turned: its jitter did too
    torch.testing.assert_close(offset[0], jitter.expand(5, 5, 3))
    assert float((offset[1] - jitter).abs().max()) > 1e-3


def test_zero_deltas_change_nothing():
    batch = two_image_batch()
    out = CameraRefinement({"enabled": True, "n_images": 2}).double()(batch)
    for key in ("c2w", "rays_o", "rays_d", "mvp_mtx", "camera_positions"):
        torch.testing.assert_close(out[key], batch[key], msg=key)


def test_single_image_batches_are_image_0():
    # the single-image datamodule's batch has no index
    batch = camera_batch(camera(0.0, 0.0, 3.0), 4)
    refinement = CameraRefinement({"enabled": True}).double()
    set_deltas(refinement, [[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.5]])
    out = refinement(batch)
    # +0.5 along the camera's own z (backwards): from distance 3 to 3.5
    torch.testing.assert_close(out["camera_positions"], torch.tensor([[3.5, 0.0, 0.0]]).double())


def test_bad_settings_and_indices_are_config_errors():
    with pytest.raises(ConfigError, match="camera_refinement.n_images"):
        CameraRefinement({"enabled": True, "n_images": 0})
    with pytest.raises(ConfigError, match="camera_refinement.lr"):
        CameraRefinement({"enabled": True, "lr": 0.0})
    batch = two_image_batch()  # indices 1 and 0
    with pytest.raises(ConfigError, match="n_images=1 but the batch has image index 1"):
        CameraRefinement({"enabled": True, "n_images": 1}).double()(batch)
    with pytest.raises(ConfigError, match="needs camera batches with c2w"):
        CameraRefinement({"enabled": True})({"rays_o": batch["rays_o"]})


def test_recovers_perturbed_poses_of_a_known_scene():
    """Two views of three coloured blobs: the targets are rendered from the true poses; the
    batch holds poses off by 3-4 degrees and 8-9 cm (camera 2 units away); only the deltas are
    optimised (Adam, the renderer and scene frozen)."""
    torch.manual_seed(0)
    size = 16
    true = torch.cat([camera(15.0, 30.0, 2.0), camera(-10.0, 150.0, 2.0)]).float()
    errors = torch.stack(
        [
            rigid(4.0, [1.0, 2.0, 0.5], [0.06, -0.04, 0.05]),
            rigid(3.0, [-1.0, 0.5, 1.0], [-0.05, 0.06, -0.04]),
        ]
    ).float()
    given = true @ errors
    renderer = make_renderer(
        "nerf-volume-renderer", AnalyticBlobs({}), num_samples_per_ray=48, grid_prune=False
    ).eval()
    with torch.no_grad():
        target = renderer(**camera_batch(true, size))["comp_rgb"]
    batch = camera_batch(given, size, index=[0, 1])
    refinement = CameraRefinement({"enabled": True, "n_images": 2})
    optim = torch.optim.Adam(refinement.parameters(), lr=1e-2)
    t0, r0 = pose_errors(given, true)
    for _ in range(150):
        optim.zero_grad()
        out = renderer(**refinement(batch))
        ((out["comp_rgb"] - target) ** 2).mean().backward()
        optim.step()
    with torch.no_grad():
        t1, r1 = pose_errors(refinement(batch)["c2w"], true)
    print(
        f"\n[pose] translation {t0.tolist()} -> {t1.tolist()}, degrees {r0.tolist()} -> {r1.tolist()}"
    )
    assert (t1 <= 0.2 * t0).all(), (t0, t1)  # at least 80 % of the translation error gone
    assert (r1 <= 0.5 * r0).all(), (r0, r1)


def test_mvp_of_the_refined_batch_projects_like_the_refined_rays():
    """A point on a refined ray projects (through the refined mvp_mtx) onto that ray's pixel."""
    size = 4
    batch = camera_batch(camera(10.0, 70.0, 2.5), size)
    refinement = CameraRefinement({"enabled": True}).double()
    set_deltas(refinement, [[0.1, -0.05, 0.2]], [[0.1, 0.2, -0.1]])
    out = refinement(batch)
    point = out["rays_o"][0, 1, 2] + 1.7 * out["rays_d"][0, 1, 2]
    clip = out["mvp_mtx"][0] @ torch.cat([point, torch.ones(1, dtype=point.dtype)])
    ndc = clip[:2] / clip[3]
    # pixel (row 1, column 2): x = (2 + 0.5) / 4 * 2 - 1, y = (1 + 0.5) / 4 * 2 - 1 (row 0 at
    # the top: the projection flips y)
    torch.testing.assert_close(ndc, torch.tensor([0.25, -0.25], dtype=ndc.dtype))


def test_multiview_batches_are_refined_by_their_frame():
    """A multiview-camera-datamodule batch (the shipped cube scene) is moved by its own frame's
    delta only: the camera shifts along its own axes, its rays and projection follow."""
    from threestudio.data.multiview import MultiviewDataModule
    from threestudio.models.camera_refinement import CameraRefinement
    from threestudio.utils.paths import LOAD_DIR

    dm = MultiviewDataModule(
        {"dataroot": f"{LOAD_DIR}/scenes/cube", "train_downsample_resolution": 2}
    )
    dm.setup("fit")
    batch = dm.train_dataset.collate(None)
    frame = int(batch["index"])
    refine = CameraRefinement({"n_images": len(dm.train_dataset.frames.c2w)})
    with torch.no_grad():
        refine.translation[frame] = torch.tensor([0.1, 0.0, 0.0])  # along the camera's x
        refine.translation[(frame + 1) % refine.cfg.n_images] = torch.tensor([0.0, 5.0, 0.0])
    out = refine.refine_batch(batch)
    right = batch["c2w"][0, :3, 0]
    assert torch.allclose(
        out["rays_o"] - batch["rays_o"], 0.1 * right.expand_as(batch["rays_o"]), atol=1e-6
    )
    assert torch.allclose(out["rays_d"], batch["rays_d"], atol=1e-6)  # no rotation
    assert torch.allclose(
        out["camera_positions"][0], batch["camera_positions"][0] + 0.1 * right, atol=1e-6
    )
    # a point on a refined ray projects, with the refined mvp, to that ray's pixel
    v, u = 7, 20
    point = out["rays_o"][0, v, u] + 1.5 * out["rays_d"][0, v, u]
    clip = out["mvp_mtx"][0] @ torch.cat([point, torch.ones(1)])
    ndc = clip[:3] / clip[3]
    size = torch.tensor([batch["width"], batch["height"]], dtype=torch.float32)
    assert torch.allclose(
        (ndc[:2] + 1) / 2 * size, torch.tensor([u, v], dtype=torch.float32), atol=1e-2
    )
