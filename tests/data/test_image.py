import os

import numpy as np
import pytest
import torch
from PIL import Image

import threestudio
from threestudio.data.image import SingleImageDataModule, SingleImageIterableDataset
from threestudio.utils.errors import ConfigError, UserError
from threestudio.utils.paths import LOAD_DIR

SPHERE = os.path.join(LOAD_DIR, "images", "sphere_rgba.png")
SPHERE_RADIUS = 0.5  # threestudio.bundled.shapes.shape_mesh("sphere")
# the reference camera the example images were rendered from (scripts/make_example_images.py)
SPHERE_CAMERA = {
    "default_elevation_deg": 0.0,
    "default_azimuth_deg": 0.0,
    "default_camera_distance": 3.8,
    "default_fovy_deg": 20.0,
}
REFERENCE_KEYS = {
    "rays_o",
    "rays_d",
    "mvp_mtx",
    "camera_positions",
    "light_positions",
    "elevation",
    "azimuth",
    "camera_distances",
    "rgb",
    "ref_depth",
    "ref_normal",
    "mask",
    "height",
    "width",
    "c2w",
    "fovy",
    "random_camera",
}
RANDOM_CAMERA = {"height": 16, "width": 16, "batch_size": 3, "eval_height": 8, "eval_width": 8}


def make(stage="fit", **cfg):
    base = {"image_path": SPHERE, "height": 64, "width": 64, "random_camera": RANDOM_CAMERA}
    base.update(SPHERE_CAMERA)
    base.update(cfg)
    dm = SingleImageDataModule(base)
    dm.setup(stage)
    return dm


def first_batch(dm):
    return next(iter(dm.train_dataloader()))


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def sphere_hits(rays_o, rays_d):
    """Where each ray meets the analytic sphere: hit mask, distance along the ray, point."""
    d = torch.nn.functional.normalize(rays_d, dim=-1)
    b = (rays_o * d).sum(-1)
    closest = rays_o - b[..., None] * d
    miss_distance = closest.norm(dim=-1)  # of the ray from the centre
    t = -b - torch.sqrt((SPHERE_RADIUS**2 - miss_distance**2).clamp(min=0))
    points = rays_o + t[..., None] * d
    return miss_distance < SPHERE_RADIUS, miss_distance, t, points


def test_registered_and_published_names():
    assert threestudio.find("single-image-datamodule") is SingleImageDataModule
    assert SingleImageDataModule.config_class.__name__ == "SingleImageDataModuleConfig"


@pytest.mark.parametrize("size", [128, 64])
def test_reference_rays_hit_the_sphere_where_the_mask_says(size):
    dm = make(height=size, width=size, rays_noise_scale=0.0, requires_depth=True)
    batch = first_batch(dm)
    hit, miss_distance, t, _ = sphere_hits(batch["rays_o"][0], batch["rays_d"][0])
    mask = batch["mask"][0, ..., 0]
    assert mask.dtype == torch.bool
    # the rendered sphere is a polygon inside the analytic one and its rim is antialiased:
    # pixels more than a pixel's footprint from the rim agree exactly
    pixel = 2 * 3.8 * np.tan(np.radians(10.0)) / size
    away_from_rim = (miss_distance - SPHERE_RADIUS).abs() > 1.5 * pixel
    assert away_from_rim.sum() > 0.8 * size * size
    assert torch.equal(mask[away_from_rim], hit[away_from_rim])
    assert (mask == hit).float().mean() > 0.98
    # the depth map grows with the distance along the camera axis (near 0, far 1)
    forward = -batch["c2w"][0, :3, 2]
    z = t * (torch.nn.functional.normalize(batch["rays_d"][0], dim=-1) @ forward)
    inside = hit & mask & away_from_rim
    depth = batch["ref_depth"][0][inside]
    assert np.corrcoef(depth.numpy(), z[inside].numpy())[0, 1] > 0.99


def test_normals_are_the_spheres_world_normals():
    batch = first_batch(make(requires_normal=True, rays_noise_scale=0.0))
    hit, miss_distance, _, points = sphere_hits(batch["rays_o"][0], batch["rays_d"][0])
    inside = hit & (miss_distance < 0.9 * SPHERE_RADIUS)
    # the established zero123 system decodes ref_normal as 1 - 2 * ref_normal
    normal = 1 - 2 * batch["ref_normal"][0][inside]
    expected = torch.nn.functional.normalize(points[inside], dim=-1)
    cos = torch.nn.functional.cosine_similarity(normal, expected, dim=-1)
    assert cos.min() > 0.97 and cos.mean() > 0.995


def test_reference_camera_matches_elevation_azimuth_distance():
    batch = first_batch(
        make(default_elevation_deg=30.0, default_azimuth_deg=90.0, default_camera_distance=2.0)
    )
    # azimuth 90 at elevation 30: on the +y side, above (x back, y right, z up)
    expected = torch.tensor([[0.0, 2 * np.cos(np.radians(30)), 2 * np.sin(np.radians(30))]]).float()
    assert torch.allclose(batch["camera_positions"], expected, atol=1e-5)
    assert torch.allclose(batch["light_positions"], expected, atol=1e-5)
    assert torch.allclose(batch["c2w"][0, :3, 3], expected[0], atol=1e-5)
    # OpenGL: the camera looks down its -z axis, at the origin
    assert torch.allclose(-batch["c2w"][0, :3, 2], -expected[0] / 2.0, atol=1e-5)
    # the mvp matrix projects the origin to the image centre
    clip = batch["mvp_mtx"][0] @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert torch.allclose(clip[:2] / clip[3], torch.zeros(2), atol=1e-5)


def test_batch_keys_and_shapes():
    dm = make(height=32, width=32, requires_depth=True, requires_normal=True)
    batch = first_batch(dm)
    assert REFERENCE_KEYS <= set(batch)
    assert batch["rays_o"].shape == (1, 32, 32, 3) and batch["rays_d"].shape == (1, 32, 32, 3)
    assert torch.allclose(batch["rays_d"].norm(dim=-1), torch.ones(1, 32, 32), atol=1e-5)
    assert batch["mvp_mtx"].shape == (1, 4, 4) and batch["c2w"].shape == (1, 4, 4)
    for key in ("camera_positions", "light_positions"):
        assert batch[key].shape == (1, 3)
    for key in ("elevation", "azimuth", "camera_distances", "fovy"):
        assert batch[key].shape == (1,)
    assert torch.allclose(batch["fovy"], torch.deg2rad(torch.tensor([20.0])))
    assert batch["rgb"].shape == (1, 32, 32, 3) and batch["rgb"].dtype == torch.float32
    assert 0.0 <= batch["rgb"].min() and batch["rgb"].max() <= 1.0
    assert batch["mask"].shape == (1, 32, 32, 1) and batch["mask"].dtype == torch.bool
    # as the established delivers them: depth without a channel axis, normals with three
    assert batch["ref_depth"].shape == (1, 32, 32)
    assert batch["ref_normal"].shape == (1, 32, 32, 3)
    assert (batch["height"], batch["width"]) == (32, 32)
    random_views = batch["random_camera"]
    assert {"rays_o", "mvp_mtx", "c2w", "elevation", "height"} <= set(random_views)
    assert random_views["rays_o"].shape == (3, 16, 16, 3)
    # without depth/normal the keys stay, empty (systems test them against None)
    plain = first_batch(make())
    assert plain["ref_depth"] is None and plain["ref_normal"] is None


def test_without_random_camera_there_is_no_sub_batch():
    batch = first_batch(make(use_random_camera=False))
    assert "random_camera" not in batch and batch["rgb"].shape == (1, 64, 64, 3)


def test_resolution_milestones_change_the_reference_and_random_views():
    dm = make(
        height=[16, 32],
        width=[16, 32],
        resolution_milestones=[3],
        random_camera=dict(RANDOM_CAMERA, height=[8, 12], width=[8, 12], resolution_milestones=[3]),
    )
    dataset = dm.train_dataset
    sizes = []
    for _ in range(5):  # each collate is the next step's batch
        batch = dataset.collate(None)
        sizes.append((batch["rgb"].shape[1], batch["random_camera"]["rays_o"].shape[1]))
    assert sizes == [(16, 8)] * 3 + [(32, 12)] * 2
    assert batch["rays_o"].shape == (1, 32, 32, 3) and batch["mask"].shape == (1, 32, 32, 1)
    # resume: the stream continues at the saved step
    dataset.set_step(1)
    assert dataset.collate(None)["height"] == 16
    dataset.update_step(0, 10)
    assert dataset.rgb.shape[1] == 32 and dataset.height == 32


def test_milestones_with_one_size_are_ignored_with_a_warning(monkeypatch):
    warnings = []
    monkeypatch.setattr(threestudio, "warn", lambda message, *a, **k: warnings.append(message))
    dm = make(height=16, width=16, resolution_milestones=[5])
    assert dm.train_dataset.collate(None)["height"] == 16
    assert any("resolution_milestones" in w for w in warnings)


def test_milestones_must_match_the_sizes():
    with pytest.raises(ConfigError) as excinfo:
        make(height=[16, 32], width=[16, 32], resolution_milestones=[])
    assert "resolution_milestones" in one_line(excinfo)


def test_reference_ray_jitter_is_small_fixed_and_seeded():
    a = first_batch(make(rays_noise_scale=2e-3))
    b = first_batch(make(rays_noise_scale=2e-3))
    c = first_batch(make(rays_noise_scale=0.0))
    assert torch.equal(a["rays_o"], b["rays_o"])
    offset = (a["rays_o"] - c["rays_o"]).abs().max()
    assert 0 < offset < 2e-2


def test_mixed_camera_config_fixes_the_random_views_intrinsics_on_even_ranks(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    dm = make(use_mixed_camera_config=True, default_camera_distance=3.8, default_fovy_deg=20.0)
    views = dm.train_dataset.collate(None)["random_camera"]
    assert torch.allclose(views["camera_distances"], torch.full((3,), 3.8))
    assert torch.allclose(views["fovy"], torch.deg2rad(torch.full((3,), 20.0)))
    monkeypatch.setenv("RANK", "1")
    assert not make(use_mixed_camera_config=True).train_dataset.fixed_camera_intrinsic


def test_evaluation_is_the_turntable_and_needs_no_image():
    dm = make("test", image_path="does/not/exist.png")
    dm.cfg.random_camera["n_test_views"] = 4
    dm.setup("test")
    batches = list(dm.test_dataloader())
    assert len(batches) == 4 and batches[0]["index"].tolist() == [0]
    assert batches[0]["rays_o"].shape == (1, 8, 8, 3) and batches[0]["height"] == 8
    val = next(iter(make("validate").val_dataloader()))
    assert val["c2w"].shape == (1, 4, 4)


# ---------- other inputs and the one-line errors ----------


def save(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


def test_rgb_with_a_mask_file(tmp_path):
    rgba = np.asarray(Image.open(SPHERE))
    rgb = save(tmp_path / "sphere.png", rgba[..., :3])
    mask = save(tmp_path / "sphere_mask.png", rgba[..., 3])
    with_file = first_batch(make(image_path=rgb, mask_path=mask))
    with_alpha = first_batch(make())
    assert torch.equal(with_file["mask"], with_alpha["mask"])
    assert torch.allclose(with_file["rgb"], with_alpha["rgb"])


def test_missing_image_names_the_path(tmp_path):
    path = str(tmp_path / "nothing_rgba.png")
    with pytest.raises(UserError) as excinfo:
        make(image_path=path)
    assert path in one_line(excinfo)
    with pytest.raises(ConfigError) as excinfo:
        make(image_path="")
    assert "image_path" in one_line(excinfo)


def test_missing_depth_or_normal_names_the_path(tmp_path):
    image = save(tmp_path / "ball_rgba.png", np.asarray(Image.open(SPHERE)))
    for kind in ("depth", "normal"):
        with pytest.raises(UserError) as excinfo:
            make(image_path=image, **{f"requires_{kind}": True})
        message = one_line(excinfo)
        assert str(tmp_path / f"ball_{kind}.png") in message and f"requires_{kind}" in message


def test_missing_mask_file_names_the_path(tmp_path):
    rgb = save(tmp_path / "flat.png", np.zeros((8, 8, 3)))
    with pytest.raises(UserError) as excinfo:
        make(image_path=rgb, mask_path=str(tmp_path / "flat_mask.png"))
    assert str(tmp_path / "flat_mask.png") in one_line(excinfo)


def test_an_image_without_alpha_or_mask_is_refused(tmp_path):
    rgb = save(tmp_path / "flat.png", np.zeros((8, 8, 3)))
    with pytest.raises(UserError) as excinfo:
        make(image_path=rgb)
    message = one_line(excinfo)
    assert rgb in message and "alpha" in message and "mask_path" in message


def test_a_non_square_image_is_refused_for_a_square_render(tmp_path):
    wide = save(tmp_path / "wide_rgba.png", np.zeros((8, 12, 4)))
    with pytest.raises(ConfigError) as excinfo:
        make(image_path=wide, height=64, width=64)
    message = one_line(excinfo)
    assert wide in message and "12x8" in message and "square" in message
    # the same image at its own aspect is fine
    batch = first_batch(make(image_path=wide, height=16, width=24))
    assert batch["rgb"].shape == (1, 16, 24, 3)


def test_a_non_square_depth_map_is_refused(tmp_path):
    image = save(tmp_path / "ball_rgba.png", np.asarray(Image.open(SPHERE)))
    save(tmp_path / "ball_depth.png", np.zeros((64, 32)))
    with pytest.raises(ConfigError) as excinfo:
        make(image_path=image, requires_depth=True)
    assert str(tmp_path / "ball_depth.png") in one_line(excinfo)


def test_unknown_keys_are_errors():
    with pytest.raises(Exception, match="no_such_key"):
        make(no_such_key=1)
    with pytest.raises(Exception, match="no_such_key"):
        make(random_camera={"no_such_key": 1})


def test_the_iterable_dataset_is_exported():
    assert issubclass(SingleImageIterableDataset, torch.utils.data.IterableDataset)


def test_companion_paths_and_16_bit_depth(tmp_path):
    from threestudio.data.image import companion_path

    assert companion_path("a/b/cat_rgba.png", "depth") == "a/b/cat_depth.png"
    assert companion_path("a/b/cat.png", "normal") == "a/b/cat_normal.png"
    image = save(tmp_path / "ball_rgba.png", np.asarray(Image.open(SPHERE)))
    Image.fromarray(np.full((128, 128), 32768, dtype=np.uint16)).save(tmp_path / "ball_depth.png")
    depth = first_batch(make(image_path=image, requires_depth=True))["ref_depth"]
    assert torch.allclose(depth, torch.full_like(depth, 32768 / 65535), atol=1e-4)
