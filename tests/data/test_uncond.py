import math

import pytest
import torch

from threestudio.data.uncond import RandomCameraDataModule, fitted_distance, refit_turntable
from threestudio.utils.errors import ConfigError

KEYS = {
    "rays_o",
    "rays_d",
    "mvp_mtx",
    "camera_positions",
    "c2w",
    "light_positions",
    "elevation",
    "azimuth",
    "camera_distances",
    "height",
    "width",
    "fovy",
    "proj_mtx",
}


def make(**cfg):
    base = {"eval_height": 8, "eval_width": 8, "n_val_views": 2, "n_test_views": 6}
    base.update(cfg)
    dm = RandomCameraDataModule(base)
    dm.setup("fit")
    dm.setup("test")
    return dm


def test_batch_keys_and_shapes():
    dm = make(height=16, width=12, batch_size=3)
    batch = dm.train_dataset.collate(None)
    assert KEYS <= set(batch)
    assert batch["rays_o"].shape == (3, 16, 12, 3) and batch["mvp_mtx"].shape == (3, 4, 4)
    assert torch.allclose(batch["rays_d"].norm(dim=-1), torch.ones(3, 16, 12), atol=1e-5)
    test_batch = next(iter(dm.test_dataloader()))
    assert KEYS | {"index"} <= set(test_batch)


def test_unperturbed_cameras_look_at_the_origin_and_match_mvp():
    dm = make(
        height=9, width=9, batch_size=4, camera_perturb=0.0, center_perturb=0.0, up_perturb=0.0
    )
    b = dm.train_dataset.collate(None)
    # the centre pixel's ray passes through the origin
    o, d = b["rays_o"][:, 4, 4], b["rays_d"][:, 4, 4]
    closest = o - (o * d).sum(-1, keepdim=True) * d
    assert closest.norm(dim=-1).max() < 1e-4
    # camera position agrees with elevation/azimuth/distance (x back, y right, z up)
    el, az, r = b["elevation"] * math.pi / 180, b["azimuth"] * math.pi / 180, b["camera_distances"]
    expected = torch.stack(
        [r * torch.cos(el) * torch.cos(az), r * torch.cos(el) * torch.sin(az), r * torch.sin(el)],
        -1,
    )
    assert torch.allclose(b["camera_positions"], expected, atol=1e-5)
    # the origin projects to the image centre through mvp
    clip = b["mvp_mtx"] @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    ndc = clip[:, :2] / clip[:, 3:]
    assert ndc.abs().max() < 1e-4


def test_ranges_and_uniform_azimuth_sectors():
    dm = make(
        batch_size=4,
        elevation_range=[10, 20],
        camera_distance_range=[2.0, 2.5],
        fovy_range=[30, 40],
        batch_uniform_azimuth=True,
    )
    for _ in range(20):
        b = dm.train_dataset.collate(None)
        assert (b["elevation"] >= 10 - 1e-4).all() and (b["elevation"] <= 20 + 1e-4).all()
        assert (b["camera_distances"] >= 2.0).all() and (b["camera_distances"] <= 2.5).all()
        fov = b["fovy"] * 180 / math.pi
        assert (fov >= 30 - 1e-4).all() and (fov <= 40 + 1e-4).all()
        sector = ((b["azimuth"] + 180) // 90).long()
        assert sector.tolist() == [0, 1, 2, 3]  # one camera per quarter turn


def test_resolution_milestones_change_size_and_batch():
    dm = make(height=[8, 16], width=[8, 16], batch_size=[4, 2], resolution_milestones=[3])
    ds = dm.train_dataset
    shapes = [tuple(ds.collate(None)["rays_o"].shape) for _ in range(5)]
    assert shapes[:3] == [(4, 8, 8, 3)] * 3 and shapes[3:] == [(2, 16, 16, 3)] * 2
    with pytest.raises(ConfigError, match="resolution_milestones"):
        _ = make(height=[8, 16], width=[8, 16], resolution_milestones=[]).train_dataset


def test_single_resolution_ignores_milestones_with_a_warning(caplog):
    # as the established API: a config with milestones whose sizes are overridden to one value
    with caplog.at_level("WARNING"):
        ds = make(height=8, width=8, resolution_milestones=[3, 5]).train_dataset
    assert "resolution_milestones" in caplog.text and "ignored" in caplog.text
    assert [tuple(ds.collate(None)["rays_o"].shape) for _ in range(6)] == [(1, 8, 8, 3)] * 6
    # data.width=32 over a list of heights: the single width holds at every milestone
    ds = make(height=[8, 16], width=4, resolution_milestones=[2]).train_dataset
    shapes = [tuple(ds.collate(None)["rays_o"].shape) for _ in range(3)]
    assert shapes == [(1, 8, 4, 3), (1, 8, 4, 3), (1, 16, 4, 3)]
    with pytest.raises(ConfigError, match="same number of values"):
        _ = make(height=[8, 16], width=[8, 16, 32], resolution_milestones=[2]).train_dataset


def test_batches_are_a_function_of_the_step():
    torch.manual_seed(0)
    ds = make(batch_size=2).train_dataset
    first = [ds.collate(None)["azimuth"] for _ in range(4)]
    torch.rand(100)  # other users of the global RNG do not change the camera stream
    ds.set_step(2)
    again = ds.collate(None)["azimuth"]
    assert torch.equal(again, first[2])


@pytest.mark.parametrize("strategy", ["dreamfusion", "magic3d"])
def test_light_sampling(strategy):
    ds = make(
        batch_size=64, light_sample_strategy=strategy, light_distance_range=[1.0, 1.5]
    ).train_dataset
    b = ds.collate(None)
    dist = b["light_positions"].norm(dim=-1)
    assert (dist >= 1.0 - 1e-4).all() and (dist <= 1.5 + 1e-4).all()
    # lights are on the camera's side of the object
    cos = torch.nn.functional.cosine_similarity(b["light_positions"], b["camera_positions"], dim=-1)
    assert cos.mean() > 0.3
    with pytest.raises(ConfigError, match="light_sample_strategy"):
        _ = make(light_sample_strategy="sun").train_dataset


def test_eval_turntable():
    dm = make(eval_elevation_deg=20.0, eval_camera_distance=2.0)
    azimuths = [float(b["azimuth"][0]) for b in dm.test_dataloader()]
    assert len(azimuths) == 6
    assert azimuths == sorted(azimuths) and azimuths[0] == -180.0
    b = next(iter(dm.test_dataloader()))
    assert float(b["elevation"][0]) == 20.0 and float(b["camera_distances"][0]) == 2.0


def test_refit_turntable_matches_a_turntable_built_at_that_distance():
    near = make(eval_elevation_deg=20.0, eval_camera_distance=1.5, eval_fovy_deg=50.0)
    far = make(eval_elevation_deg=20.0, eval_camera_distance=3.0, eval_fovy_deg=50.0)
    for a, b in zip(near.test_dataloader(), far.test_dataloader()):
        refit_turntable(a, torch.zeros(3), 3.0)
        for key in KEYS - {"height", "width"}:
            assert torch.allclose(torch.as_tensor(a[key]), torch.as_tensor(b[key]), atol=1e-5), key


def sphere_hits(batch, center, radius):
    """Which pixels' rays meet the sphere (analytic ray-sphere test)."""
    o = batch["rays_o"][0] - center
    d = torch.nn.functional.normalize(batch["rays_d"][0], dim=-1)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - radius**2
    return (b * b - c > 0) & (b < 0)


@pytest.mark.parametrize("share", [0.5, 0.9])
def test_fitted_distance_frames_a_sphere_at_its_share_of_the_frame(share):
    center, radius = torch.tensor([0.3, -0.2, -0.4]), 0.7
    dm = make(eval_height=64, eval_width=64, eval_fovy_deg=50.0, eval_elevation_deg=20.0)
    distance = fitted_distance(radius, 50.0, share)
    for batch in dm.test_dataloader():
        refit_turntable(batch, center, distance)
        assert torch.allclose(
            batch["camera_positions"][0] - center, batch["c2w"][0, :3, 3] - center
        )
        assert abs(float((batch["camera_positions"][0] - center).norm()) - distance) < 1e-4
        hits = sphere_hits(batch, center, radius)
        rows = hits.any(dim=1).nonzero()
        cols = hits.any(dim=0).nonzero()
        # centred in the frame, as tall as the share asks (to a pixel)
        assert abs(len(rows) / 64 - share) <= 1.5 / 64 and abs(len(cols) / 64 - share) <= 1.5 / 64
        assert (
            abs(float(rows.float().mean()) - 31.5) < 1
            and abs(float(cols.float().mean()) - 31.5) < 1
        )
        # the mvp matrix agrees: the centre projects to the middle of the image
        p = batch["mvp_mtx"][0] @ torch.cat([center, torch.ones(1)])
        assert torch.allclose(p[:2] / p[3], torch.zeros(2), atol=1e-5)


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_eval_fit_object_outside_zero_to_one_is_one_line(share):
    with pytest.raises(ConfigError, match="data.eval_fit_object"):
        RandomCameraDataModule({"eval_fit_object": share})


def test_eval_fit_mode_unknown_is_one_line():
    with pytest.raises(
        ConfigError, match="data.eval_fit_mode: 'contians' is not one of fill, contain"
    ):
        RandomCameraDataModule({"eval_fit_object": 0.9, "eval_fit_mode": "contians"})


def test_frame_extent_of_a_point_is_its_projection():
    from threestudio.utils.framing import frame_extent

    # a point 0.3 above the centre, seen level from 2.0 through a 60-degree view
    extent = frame_extent(
        torch.tensor([[0.0, 0.0, 0.3]]), torch.zeros(3), 2.0, 0.0, [0.0, 90.0], 60.0
    )
    assert extent == pytest.approx(0.3 / 2.0 / math.tan(math.radians(30)))
    # wider than tall: x is measured against the wider half frame
    side = frame_extent(torch.tensor([[0.0, 0.3, 0.0]]), torch.zeros(3), 2.0, 0.0, [0.0], 60.0, 2.0)
    assert side == pytest.approx(0.3 / 2.0 / math.tan(math.radians(30)) / 2.0)
    behind = frame_extent(torch.tensor([[3.0, 0.0, 0.0]]), torch.zeros(3), 2.0, 0.0, [0.0], 60.0)
    assert behind == math.inf


def test_contain_distance_holds_a_sphere_at_the_share():
    import trimesh

    from threestudio.data.uncond import fitted_distance
    from threestudio.utils.framing import contain_distance

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    pts = torch.tensor(sphere.vertices, dtype=torch.float64)
    azimuths = [0.0, 45.0, 200.0]
    d = contain_distance(pts, torch.zeros(3), 0.8, 20.0, azimuths, 50.0)
    assert d == pytest.approx(fitted_distance(0.5, 50.0, 0.8), rel=0.01)  # the silhouette's
    assert contain_distance(pts, torch.zeros(3), 0.8, 20.0, azimuths, 50.0, min_distance=5.0) == 5.0


def test_inside_silhouettes_keeps_the_points_of_the_rendered_object():
    import trimesh

    from threestudio.utils.framing import inside_silhouettes

    center, radius = torch.tensor([0.2, -0.1, 0.1]), 0.4
    dm = make(eval_height=48, eval_width=64, eval_fovy_deg=50.0, n_test_views=4)
    c2w, fovy, opacity = [], [], []
    for batch in dm.test_dataloader():
        refit_turntable(batch, torch.zeros(3), 2.5)
        c2w.append(batch["c2w"])
        fovy.append(torch.as_tensor(batch["fovy"]).reshape(-1))
        opacity.append(sphere_hits(batch, center, radius).float()[None])  # the solid sphere
    c2w, fovy, opacity = torch.cat(c2w), torch.cat(fovy), torch.cat(opacity)
    surface = torch.tensor(trimesh.creation.icosphere(2, radius=radius).vertices).float() + center
    floaters = torch.tensor([[0.2, -0.1, -0.6], [0.9, 0.0, 0.1], [0.0, 0.0, 5.0]])
    inside = inside_silhouettes(torch.cat([surface, floaters]), c2w, fovy, opacity)
    assert bool(inside[: len(surface)].all())  # every point of the sphere's surface
    assert not bool(inside[len(surface) :].any())  # below it, beside it, behind every camera
    # the silhouette not grown: points well inside the sphere still fall on its pixels (the
    # projection agrees with the rays), a point just outside it in one view does not
    core = (surface - center) * 0.8 + center
    assert bool(inside_silhouettes(core, c2w, fovy, opacity, dilate=0).all())
    near = center + torch.tensor([0.0, 0.0, radius + 0.12])
    assert not bool(inside_silhouettes(near[None], c2w, fovy, opacity, dilate=0).any())
