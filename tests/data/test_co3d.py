"""co3d-datamodule on the shipped example capture (scripts/make_example_co3d.py): its cameras,
read from CO3D's PyTorch3D poses and NDC intrinsics and normalised, see the sphere where the
images show it; its depth maps put the pixels on the sphere; bad captures give one-line errors."""

import gzip
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from threestudio.data.co3d import Co3dDataModule, load_depth_png, split_indices
from threestudio.utils.errors import ConfigError, UserError
from threestudio.utils.paths import LOAD_DIR, REPO_ROOT

EXAMPLE = os.path.join(LOAD_DIR, "co3d", "toy", "orange_sphere")
RANDOM_CAMERA = {
    "height": 8,
    "width": 8,
    "batch_size": 2,
    "eval_height": 8,
    "eval_width": 8,
    "n_val_views": 1,
    "n_test_views": 2,
}

# the capture's own description of its scene (sphere centre and radius in the capture world)
_spec = importlib.util.spec_from_file_location(
    "make_example_co3d", os.path.join(REPO_ROOT, "scripts", "make_example_co3d.py")
)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)


def make(stage="fit", **cfg):
    base = {
        "root_dir": EXAMPLE,
        "height": 32,
        "width": 32,
        "scale_radius": 3.0,
        "random_camera": RANDOM_CAMERA,
    }
    base.update(cfg)
    dm = Co3dDataModule(base)
    dm.setup(stage)
    return dm


def sphere_in_normalised_world(capture):
    """The sphere's centre and radius mapped by the datamodule's normalisation."""
    m = capture.world_to_normalised.double()
    center = (m @ torch.tensor([*example.SPHERE_CENTER, 1.0], dtype=torch.float64))[:3]
    scale = float(torch.linalg.det(m[:3, :3]).abs() ** (1 / 3))
    return center, example.SPHERE_RADIUS * example.WORLD_SCALE * scale


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("box_crop", [False, True])
def test_the_sphere_centre_projects_where_each_view_shows_the_sphere(box_crop):
    dataset = make(box_crop=box_crop).train_dataset
    capture = dataset.capture
    center, _ = sphere_in_normalised_world(capture)
    rows, cols = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    seen = []
    for i in range(len(capture.c2w)):
        c2w = capture.c2w[i].double()
        in_camera = c2w[:3, :3].T @ (center - c2w[:3, 3])  # OpenGL: looking down -z
        assert in_camera[2] < 0
        (fx, fy), (cx, cy) = capture.focals[i].tolist(), capture.principals[i].tolist()
        u = cx + fx * in_camera[0] / -in_camera[2]
        v = cy - fy * in_camera[1] / -in_camera[2]
        # a sphere's silhouette is centred on its centre's projection (to a fraction of a pixel
        # at this field of view)
        weight = capture.masks[i, ..., 0].double()
        centroid = ((weight * cols).sum() / weight.sum(), (weight * rows).sum() / weight.sum())
        assert abs(float(u) - float(centroid[0])) < 0.4, (i, float(u), centroid)
        assert abs(float(v) - float(centroid[1])) < 0.4, (i, float(v), centroid)
        seen.append((float(u), float(v)))
    if not box_crop:
        # the views show the sphere at different places (so a mixed-up pose would be caught)
        us = [p[0] for p in seen]
        assert max(us) - min(us) > 3.0


def test_the_ray_of_the_pixel_at_the_silhouette_centre_passes_the_sphere_centre():
    dataset = make(box_crop=False).train_dataset
    center, _ = sphere_in_normalised_world(dataset.capture)
    for index in range(len(dataset.indices)):
        batch = dataset.view_batch(index)
        mask = batch["mask"][0, ..., 0].double()
        rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        # the pixel whose centre is nearest the silhouette's centre
        x = int(((mask * (cols + 0.5)).sum() / mask.sum()).floor())
        y = int(((mask * (rows + 0.5)).sum() / mask.sum()).floor())
        o = batch["rays_o"][0, y, x].double()
        d = batch["rays_d"][0, y, x].double()
        assert abs(float(d.norm()) - 1) < 1e-5
        along = float((center - o) @ d)
        miss = float((center - o - along * d).norm())
        fx = float(dataset.capture.focals[dataset.indices[index], 0])
        # within one pixel's footprint at the centre's distance
        assert miss < along / fx, (index, miss, along / fx)


@pytest.mark.parametrize("box_crop", [False, True])
def test_depth_maps_put_the_pixels_on_the_sphere(box_crop):
    dataset = make(box_crop=box_crop).train_dataset
    capture = dataset.capture
    center, radius = sphere_in_normalised_world(capture)
    errors = []
    for i in range(len(capture.c2w)):
        inside = capture.masks[i, ..., 0] > 0.99
        # depth runs along the camera axis: camera-space directions have z = -1
        d = capture.directions[i] @ capture.c2w[i, :3, :3].T
        points = capture.c2w[i, :3, 3] + d * capture.depths[i]
        errors.append(((points[inside].double() - center).norm(dim=-1) - radius).abs())
    errors = torch.cat(errors)
    assert len(errors) > 1000
    # the icosphere's flat faces sag by about 0.5% of the radius; float16 depth and bilinear
    # resizing add little, but for a few rim pixels
    assert float(errors.median()) < 0.01 * radius
    assert float(torch.quantile(errors, 0.99)) < 0.02 * radius


def test_the_normalised_world_is_z_up_with_cameras_at_the_set_distance():
    capture = make().train_dataset.capture
    up = capture.c2w[:, :3, 1].mean(0)  # OpenGL camera up
    torch.testing.assert_close(up / up.norm(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-5, rtol=0)
    distances = capture.c2w[:, :3, 3].norm(dim=-1).numpy()
    assert abs(float(np.median(distances)) - 3.0 * 0.95) < 1e-4  # scale_radius * cam_scale_factor


def test_splits_follow_the_established_rule_and_train_views():
    assert split_indices(8, None) == {
        "train": [1, 2, 3, 4, 5, 6, 7],
        "val": [0],
        "test": list(range(8)),
    }
    got = split_indices(8, [0, 3, 5])
    assert got["train"] == [0, 3, 5] and got["val"] == [1, 2, 4, 6, 7]
    dm = make(train_views=[0, 3, 5])
    assert torch.equal(
        dm.train_dataset.get_all_images(), dm.train_dataset.capture.images[[0, 3, 5]]
    )


def test_training_batches_visit_every_training_view_once_per_pass():
    dataset = make(train_views=[0, 3, 5]).train_dataset
    firsts = []
    for _ in range(3):
        batch = dataset.collate(None)
        firsts.append(int(batch["index"]))
    assert sorted(firsts) == [0, 1, 2]
    assert batch["rays_o"].shape == (1, 32, 32, 3) and batch["mask"].shape == (1, 32, 32, 1)
    assert batch["random_camera"]["rays_o"].shape == (2, 8, 8, 3)
    assert torch.equal(batch["ref_depth"], batch["depth"])
    # the light sits at the camera, the camera looks at the capture's centre region
    torch.testing.assert_close(batch["light_positions"], batch["c2w"][:, :3, 3])


def test_train_num_rays_picks_pixels_of_the_view():
    dataset = make(train_num_rays=50, train_views=[2]).train_dataset
    batch = dataset.collate(None)
    assert batch["rays_o"].shape == (1, 50, 1, 3) and batch["rgb"].shape == (1, 50, 1, 3)
    full = dataset.view_batch(0)
    # every sampled (ray, colour) pair is one of the view's pixels
    flat_d, flat_rgb = full["rays_d"].reshape(-1, 3), full["rgb"].reshape(-1, 3)
    for d, rgb in zip(batch["rays_d"][0, :, 0], batch["rgb"][0, :, 0]):
        pixel = int((flat_d - d).norm(dim=-1).argmin())
        assert float((flat_d[pixel] - d).norm()) < 1e-6
        torch.testing.assert_close(flat_rgb[pixel], rgb)


def test_test_views_render_the_capture_unless_the_path_is_a_circle():
    assert len(make("test", render_path="circle").test_dataset) == 2  # the turntable
    dm = make("test", render_path="views")
    assert len(dm.test_dataset) == 8
    batch = dm.test_dataset.collate([dm.test_dataset[3]])
    assert batch["rgb"].shape == (1, 32, 32, 3) and int(batch["index"]) == 3


def test_float16_depth_pngs_round_trip(tmp_path):
    depth = np.array([[0.0, 1.25], [2.5, 7.125]], dtype=np.float16)
    path = str(tmp_path / "d.png")
    Image.fromarray(depth.view(np.uint16)).save(path)
    np.testing.assert_array_equal(load_depth_png(path, 2.0), depth.astype(np.float32) * 2.0)


# ---------- bad captures: one-line errors ----------


def copy_example(tmp_path):
    root = tmp_path / "co3d"
    shutil.copytree(os.path.dirname(EXAMPLE), root / "toy")
    return root / "toy" / "orange_sphere"


def rewrite_annotations(sequence_dir, edit):
    path = sequence_dir.parent / "frame_annotations.jgz"
    with gzip.open(path, "rt") as f:
        frames = json.load(f)
    frames = edit(frames)
    with gzip.open(path, "wt") as f:
        json.dump(frames, f)


def test_a_missing_root_dir_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        make(root_dir=str(tmp_path / "nowhere"))
    assert "data.root_dir" in one_line(e)
    with pytest.raises(ConfigError) as e:
        make(root_dir="")
    assert "data.root_dir" in one_line(e)


def test_a_sequence_folder_without_annotations_is_one_line(tmp_path):
    sequence = tmp_path / "cat" / "seq"
    sequence.mkdir(parents=True)
    with pytest.raises(UserError) as e:
        make(root_dir=str(sequence))
    assert "frame_annotations.jgz not found" in one_line(e)


def test_a_frame_without_a_viewpoint_is_one_line(tmp_path):
    sequence = copy_example(tmp_path)
    rewrite_annotations(sequence, lambda frames: [dict(frames[0], viewpoint={"R": 1})] + frames)
    with pytest.raises(UserError) as e:
        make(root_dir=str(sequence))
    assert "viewpoint.T" in one_line(e)


def test_a_missing_image_is_one_line(tmp_path):
    sequence = copy_example(tmp_path)
    os.remove(sequence / "images" / "frame000004.png")
    with pytest.raises(UserError) as e:
        make(root_dir=str(sequence))
    assert "image not found" in one_line(e) and "frame000004.png" in one_line(e)


def test_another_sequence_name_and_unseen_frames(tmp_path):
    sequence = copy_example(tmp_path)
    renamed = sequence.parent / "other"
    os.rename(sequence, renamed)
    with pytest.raises(UserError) as e:
        make(root_dir=str(renamed))
    assert "no frame of sequence 'other'" in one_line(e)
    os.rename(renamed, sequence)

    # frames of an "unseen" type are skipped, as established
    def mark_unseen(frames):
        frames[1]["meta"]["frame_type"] = "test_unseen"
        return frames

    rewrite_annotations(sequence, mark_unseen)
    capture = make(root_dir=str(sequence)).train_dataset.capture
    assert len(capture.c2w) == 7 and "frame000002" not in " ".join(capture.frame_names)


def test_train_views_past_the_capture_are_one_line():
    with pytest.raises(ConfigError) as e:
        make(train_views=[0, 50, 100])
    assert "data.train_views [50, 100]" in one_line(e) and "8 usable views" in one_line(e)
