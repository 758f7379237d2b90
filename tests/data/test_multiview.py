"""multiview-camera-datamodule against the shipped example scene, whose geometry is known:
a cube of side 0.6 with coloured faces (scripts/make_example_scene.py), centred at
WORLD_OFFSET in the file's world, seen by twelve cameras 2.0 from its centre."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import threestudio
from threestudio.bundled.shapes import COLORS
from threestudio.data.multiview import MultiviewDataModule, interpolate_pose
from threestudio.utils.errors import ConfigError, UserError
from threestudio.utils.paths import LOAD_DIR

SCENE = os.path.join(LOAD_DIR, "scenes", "cube")
HALF_SIDE = 0.3
DISTANCE = 2.0
WORLD_OFFSET = torch.tensor([0.5, -0.3, 0.2])
FACES = {  # outward normal -> colour word (scripts/make_example_scene.py)
    (1, 0, 0): "red",
    (-1, 0, 0): "green",
    (0, 1, 0): "blue",
    (0, -1, 0): "yellow",
    (0, 0, 1): "orange",
    (0, 0, -1): "purple",
}
TRAIN_KEYS = {
    "index",
    "file_index",
    "rays_o",
    "rays_d",
    "mvp_mtx",
    "c2w",
    "proj_mtx",
    "camera_positions",
    "light_positions",
    "gt_rgb",
    "elevation",
    "azimuth",
    "camera_distances",
    "height",
    "width",
}


def make(stage="fit", dataroot=SCENE, **cfg):
    base = {"dataroot": dataroot, "train_downsample_resolution": 1, "eval_downsample_resolution": 0}
    base.update(cfg)
    dm = MultiviewDataModule(base)
    dm.setup(stage)
    return dm


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def full():
    return make("fit").train_dataset.frames


def test_registered_and_batch_shapes():
    assert threestudio.find("multiview-camera-datamodule") is MultiviewDataModule
    dm = make("fit", train_downsample_resolution=2, eval_downsample_resolution=1)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == TRAIN_KEYS
    assert isinstance(batch["index"], int) and 0 <= batch["index"] < 12
    assert (batch["height"], batch["width"]) == (32, 32)
    for key in ("rays_o", "rays_d", "gt_rgb"):
        assert batch[key].shape == (1, 32, 32, 3)
    for key in ("mvp_mtx", "c2w", "proj_mtx"):
        assert batch[key].shape == (1, 4, 4)
    assert batch["camera_positions"].shape == batch["light_positions"].shape == (1, 3)
    assert torch.allclose(batch["rays_d"].norm(dim=-1), torch.ones(1, 32, 32))
    assert torch.equal(batch["light_positions"], torch.zeros(1, 3))  # the established's light
    # evaluation: 2 ** 1 = 2 -> 32x32 too, every frame in order, index a tensor of one
    val = list(dm.val_dataloader())
    assert len(val) == 12
    assert val[3]["index"].tolist() == [3] and val[3]["gt_rgb"].shape == (1, 32, 32, 3)
    assert (val[3]["height"], val[3]["width"]) == (32, 32)


def test_downsampling_rules():
    # training divides by the value, evaluation by 2 ** the value (the established's two rules)
    dm = make(None, train_downsample_resolution=4, eval_downsample_resolution=2)
    assert (dm.train_dataset.frame_h, dm.train_dataset.frame_w) == (16, 16)
    assert (dm.val_dataset.frame_h, dm.test_dataset.frame_w) == (16, 16)
    dm = make("fit", train_downsample_resolution=2, eval_downsample_resolution=2)
    half, quarter = dm.train_dataset.frames, dm.val_dataset.frames
    assert half.gt_rgb.shape[1:3] == (32, 32) and quarter.gt_rgb.shape[1:3] == (16, 16)
    # halving bilinearly without antialiasing is the mean of each 2x2 block
    original = np.asarray(Image.open(os.path.join(SCENE, "images", "frame_00002.png")), np.float32)
    blocks = original.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)) / 255.0
    assert np.allclose(half.gt_rgb[1].numpy(), blocks, atol=1e-5)
    # the intrinsics scale with the image: the image centre's ray is the same at both sizes
    d_half = half.rays_d[1, 16, 16]
    d_quarter = quarter.rays_d[1, 8, 8]
    assert torch.allclose(d_half, d_quarter, atol=1e-6)
    assert torch.allclose(half.mvp_mtx[1, :, :2], quarter.mvp_mtx[1, :, :2], atol=1e-5)


def test_cameras_are_recentred_about_the_object(full):
    # the file's cameras sit 2.0 from WORLD_OFFSET; after camera_layout=around the object's
    # centre (the cameras' mean) is the origin
    raw = json.load(open(os.path.join(SCENE, "transforms.json")))
    file_positions = torch.tensor([f["transform_matrix"] for f in raw["frames"]])[:, :3, 3]
    assert torch.allclose(
        (file_positions - WORLD_OFFSET).norm(dim=-1), torch.full((12,), DISTANCE), atol=1e-4
    )
    assert torch.allclose(full.camera_positions, file_positions - WORLD_OFFSET, atol=1e-5)
    assert torch.allclose(full.camera_distances, torch.full((12,), DISTANCE), atol=1e-4)
    assert torch.allclose(full.elevation.abs(), torch.full((12,), 20.0), atol=1e-3)


def test_ray_through_the_objects_image_centre_passes_its_centre(full):
    for i in range(full.n_frames):
        image = full.gt_rgb[i]
        foreground = (image < 0.97).any(dim=-1)  # the background is white
        rows, cols = torch.nonzero(foreground, as_tuple=True)
        v, u = rows.float().mean(), cols.float().mean()
        # the ray through that pixel (rays go through pixel corners: index = coordinate)
        vi, ui = int(v.round()), int(u.round())
        o, d = full.rays_o[i, vi, ui], full.rays_d[i, vi, ui]
        closest = o + d * torch.dot(-o, d)
        # (the silhouette's centroid is off the projected centre by perspective, ~0.05 here;
        # missing re-centring would leave it 0.6 away)
        assert closest.norm() < 0.08, (i, closest)
        assert torch.dot(-o, d) > 1.5  # ahead of the camera, about the camera's distance
        # the cameras looked at the cube's centre: the image centre's ray passes it (up to the
        # half-pixel of the established's pixel-corner rays: 0.5 / 77 px of focal * 2.0)
        o, d = full.rays_o[i, 32, 32], full.rays_d[i, 32, 32]
        assert (o + d * torch.dot(-o, d)).norm() < 0.02


def _nearest_colour(rgb: torch.Tensor) -> str:
    # the material shades the albedo (ambient 0.3 + diffuse 0.7 * cos): compare chromaticity
    best, best_d = None, None
    for name in set(FACES.values()):
        albedo = torch.tensor(COLORS[name])
        d = (F.normalize(rgb, dim=0) - F.normalize(albedo, dim=0)).norm()
        if best_d is None or d < best_d:
            best, best_d = name, d
    return best


def test_projected_face_centres_show_their_colours(full):
    # a face centre projected with mvp_mtx lands on a pixel of that face's colour: the poses,
    # the projection and the image rows/columns agree, and the world is z up with +x in front
    checked = 0
    for i in range(full.n_frames):
        position = full.camera_positions[i]
        for normal, colour in FACES.items():
            n = torch.tensor(normal, dtype=torch.float32)
            if torch.dot(F.normalize(position, dim=0), n) < 0.5:
                continue  # seen too obliquely (or not at all)
            point = torch.cat([n * HALF_SIDE, torch.ones(1)])
            clip = full.mvp_mtx[i] @ point
            ndc = clip[:2] / clip[3]
            u = (ndc[0] + 1) / 2 * full.width
            v = (ndc[1] + 1) / 2 * full.height
            rgb = full.gt_rgb[i, int(v), int(u)]
            assert _nearest_colour(rgb) == colour, (i, normal, rgb)
            checked += 1
    assert checked >= 12


def test_projection_and_rays_agree(full):
    # a point along the ray of pixel (v, u) projects back to (u, v)
    i, v, u = 5, 10, 50
    point = full.rays_o[i, v, u] + 1.7 * full.rays_d[i, v, u]
    clip = full.mvp_mtx[i] @ torch.cat([point, torch.ones(1)])
    ndc = clip[:3] / clip[3]
    assert torch.allclose(
        (ndc[:2] + 1) / 2 * 64, torch.tensor([u, v], dtype=torch.float32), atol=1e-3
    )
    assert -1 < ndc[2] < 1


def test_training_frames_follow_the_step():
    dataset = make("fit").train_dataset
    first = [dataset.collate(None)["index"] for _ in range(30)]
    assert len(set(first)) > 6  # draws over the frames
    dataset.set_step(10)
    assert [dataset.collate(None)["index"] for _ in range(20)] == first[10:]
    batch = dataset.collate(None)
    i = batch["index"]
    assert torch.equal(batch["gt_rgb"][0], dataset.frames.gt_rgb[i])
    assert torch.equal(batch["c2w"][0], dataset.frames.c2w[i])


def test_intervals():
    dm = make(None, train_data_interval=3, eval_data_interval=2)
    assert dm.train_dataset.n_frames == 4 and len(dm.val_dataset) == 6
    assert dm.train_dataset.frames.item(1)["file_index"] == 3
    assert dm.val_dataset[2]["index"] == 2 and dm.val_dataset[2]["file_index"] == 4
    everything = make("test").test_dataset.frames
    # (re-centred on the kept frames' mean, which for this ring is the same point)
    assert torch.allclose(dm.train_dataset.frames.c2w[1], everything.c2w[3], atol=1e-5)
    assert torch.equal(dm.test_dataset.frames.gt_rgb[2], everything.gt_rgb[4])


def test_eval_interpolation():
    dm = make("test", eval_interpolation=[0, 2, 5])
    frames, everything = dm.test_dataset.frames, make("fit").train_dataset.frames
    assert len(dm.test_dataset) == 5
    assert torch.allclose(frames.c2w[0], everything.c2w[0], atol=1e-5)
    assert torch.allclose(frames.c2w[4], everything.c2w[2], atol=1e-5)
    assert torch.count_nonzero(frames.gt_rgb) == 0  # no images for interpolated poses
    assert frames.file_indices == [-1] * 5
    # the middle pose: a rotation halfway (azimuth 0 -> 60 at the same elevation: 30)
    R = frames.c2w[2, :3, :3]
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-5)
    forward = -R[:, 2]
    azimuth = torch.rad2deg(torch.atan2(-forward[1], -forward[0]))
    assert abs(float(azimuth) - 30.0) < 1e-3


def test_interpolate_pose_endpoints_and_halfway_turn():
    c2w_0 = torch.eye(4)
    c2w_1 = torch.eye(4)
    c2w_1[:3, :3] = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 deg
    half = interpolate_pose(c2w_0, c2w_1, 0.5)
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    assert torch.allclose(
        half[:3, :3],
        torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float32),
        atol=1e-6,
    )
    assert torch.allclose(interpolate_pose(c2w_0, c2w_1, 1.0), c2w_1, atol=1e-6)


def test_front_layout_puts_the_point_ahead_at_the_origin(tmp_path):
    # three cameras looking down -x from x = 3 (spread in y): the point 3 ahead is the origin
    root = _copy_scene(tmp_path)
    meta = json.load(open(root / "transforms.json"))
    meta["frames"] = meta["frames"][:3]
    for k, frame in enumerate(meta["frames"]):
        c2w = np.eye(4)
        c2w[:3, :3] = [[0, 0, 1], [1, 0, 0], [0, 1, 0]]  # looks down -x, z up
        c2w[:3, 3] = [3.0 + 10, k - 1.0, 0.5]
        frame["transform_matrix"] = c2w.tolist()
    json.dump(meta, open(root / "transforms.json", "w"))
    frames = make(
        "fit", dataroot=str(root), camera_layout="front", camera_distance=3.0
    ).train_dataset.frames
    expected = torch.tensor([[3.0, -1.0, 0.0], [3.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
    assert torch.allclose(frames.camera_positions, expected, atol=1e-5)


# ---------- bad inputs: one line naming what is wrong ----------


def _copy_scene(tmp_path):
    root = tmp_path / "scene"
    shutil.copytree(SCENE, root)
    return root


def _edit(root, change):
    path = root / "transforms.json"
    meta = json.load(open(path))
    change(meta)
    json.dump(meta, open(path, "w"))


def test_missing_transforms_file(tmp_path):
    with pytest.raises(UserError) as e:
        make("fit", dataroot=str(tmp_path))
    assert "transforms.json" in one_line(e) and str(tmp_path) in one_line(e)
    with pytest.raises(ConfigError) as e:
        make("fit", dataroot="")
    assert "data.dataroot" in one_line(e)


def test_missing_frame_image(tmp_path):
    root = _copy_scene(tmp_path)
    os.remove(root / "images" / "frame_00004.png")
    with pytest.raises(UserError) as e:
        make("fit", dataroot=str(root))
    assert "frame 3" in one_line(e) and "frame_00004.png" in one_line(e)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m.update(fl_x=-5.0), ["fl_x", "positive"]),
        (lambda m: m.pop("cy"), ["'cy'", "frame 0"]),
        (lambda m: m["frames"][2].update(fl_y="wide"), ["fl_y", "frame 2", "number"]),
        (lambda m: m.update(w=0), ["'w'", "positive"]),
        (lambda m: m["frames"][1].update(w=32), ["different sizes"]),
        (lambda m: m.update(camera_model="OPENCV_FISHEYE"), ["OPENCV_FISHEYE"]),
        (lambda m: m["frames"][0].update(transform_matrix=[[1, 0, 0]]), ["frame 0", "4x4"]),
        (lambda m: m.update(frames=[]), ["no frames"]),
    ],
)
def test_bad_transforms(tmp_path, change, words):
    root = _copy_scene(tmp_path)
    _edit(root, change)
    with pytest.raises(UserError) as e:
        make("fit", dataroot=str(root))
    message = one_line(e)
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    "cfg, key",
    [
        ({"batch_size": 2}, "data.batch_size"),
        ({"train_downsample_resolution": 0}, "data.train_downsample_resolution"),
        ({"train_downsample_resolution": 128}, "data.train_downsample_resolution"),
        ({"camera_layout": "inside"}, "data.camera_layout"),
        ({"camera_layout": "front"}, "data.camera_distance"),
        ({"train_data_interval": 0}, "data.train_data_interval"),
    ],
)
def test_bad_config(cfg, key):
    with pytest.raises(ConfigError) as e:
        make("fit", **cfg)
    assert key in one_line(e)


def test_bad_interpolation():
    with pytest.raises(ConfigError) as e:
        make("test", eval_interpolation=[0, 12, 3])
    assert "data.eval_interpolation" in one_line(e)
