"""A posed multi-view capture in the CO3D layout (Reizenstein et al. 2021), for image-conditioned
3D generation with several reference views (``image-condition-dreamfusion-system``).

Layout, as CO3D ships it and the established threestudio reads it (``data.root_dir`` is the
sequence folder)::

    <dataset>/<category>/frame_annotations.jgz     gzipped JSON: a list of frames
    <dataset>/<category>/<sequence>/images/...     the frames' images
    <dataset>/<category>/<sequence>/masks/...      foreground masks, 8-bit grey (soft)
    <dataset>/<category>/<sequence>/depths/...     16-bit PNGs holding float16 depth bits

Each frame names its ``sequence_name``, ``image`` (``path``, ``size`` as [H, W]), ``mask``
(``path``), ``depth`` (``path``, ``scale_adjustment``), ``viewpoint`` (PyTorch3D's ``R``, ``T``:
a world point X is at ``X @ R + T`` in the camera, x left, y up, z forward; ``focal_length`` and
``principal_point`` in NDC units) and ``meta.frame_type`` (frames whose type says "unseen" are
skipped). Paths are relative to ``<dataset>``. ``v2_mode``: CO3Dv2's NDC, in which the shorter
image side spans [-1, 1] ("ndc_isotropic"); otherwise each side spans [-1, 1].

The capture is normalised as in the established: the world is rotated so that the cameras' mean
up direction is +z, shifted so that the median of the points where the cameras' central rays
pass closest to the origin is the origin, and scaled so that the median camera distance is
``scale_radius * cam_scale_factor`` (depth maps are scaled alike); ``world_to_normalised`` holds
that map. With ``box_crop`` each view is cropped to its mask's box (grown by
``box_crop_context``) and resized, aspect kept, into the top-left of ``height`` x ``width``
(the rest zero), its intrinsics following. Cameras: OpenGL camera-to-world matrices in the
normalised world (x back, y right, z up, as everywhere here).

Training batches hold one view (``rgb``, soft ``mask``, ``depth``/``ref_depth``, its rays and
matrices; ``train_num_rays`` random pixels of it instead when fewer than its pixels) plus a
``random_camera`` sub-batch; validation is the random-camera turntable, and so is the test
unless ``render_path`` is not "circle", when the test split's views are rendered beside their
images."""

import gzip
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

import threestudio
from threestudio.data.image import open_image
from threestudio.data.uncond import (
    RandomCameraDataModule,
    RandomCameraDataModuleConfig,
    RandomCameraDataset,
    RandomCameraIterableDataset,
)
from threestudio.utils.base import Updateable
from threestudio.utils.config import config_to_primitive, parse_structured
from threestudio.utils.errors import ConfigError, UserError
from threestudio.utils.ops import get_mvp_matrix, get_ray_directions, get_rays
from threestudio.utils.paths import shipped_path
from threestudio.utils.typing import Any, Dict, Float, List, Optional, Tensor, Tuple

# PyTorch3D camera axes (x left, y up, z forward) -> OpenCV (x right, y down, z forward)
PYTORCH3D_TO_OPENCV = np.diag([-1.0, -1.0, 1.0, 1.0])
# OpenCV camera axes -> OpenGL (x right, y up, z backward)
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class Co3dDataModuleConfig:
    # the sequence folder <dataset>/<category>/<sequence> (its name is the frames' sequence_name)
    root_dir: str = ""
    batch_size: int = 1  # unused, as in the established: a training batch is one view
    height: int = 256  # height of every view after cropping/resizing
    width: int = 256  # width of every view after cropping/resizing
    load_preprocessed: bool = False  # unused, as in the established (no preprocessed cache)
    cam_scale_factor: float = 0.95  # the median camera distance is scale_radius times this
    max_num_frames: int = 300  # keep at most this many frames (in annotation order)
    # CO3Dv2 intrinsics: NDC in which the shorter side spans [-1, 1] (false: each side does)
    v2_mode: bool = True
    use_mask: bool = True  # read the masks (false: every pixel is foreground)
    box_crop: bool = True  # crop each view to its mask's bounding box before resizing
    # mask threshold of that box (lowered by 0.05 until some pixels pass)
    box_crop_mask_thr: float = 0.4
    box_crop_context: float = 0.3  # the box grows by this fraction of its size
    # random pixels of the view per training step (-1 or at least height * width: all of them)
    train_num_rays: int = -1
    # indices (after filtering) of the training views; null: all but every tenth (those test)
    train_views: Optional[list] = None
    train_split: str = "train"  # the split trained on ("train", "val" or "test": all views)
    val_split: str = "val"  # the split of the validation dataset
    test_split: str = "test"  # the split of the test dataset
    scale_radius: float = 1.0  # see cam_scale_factor
    use_random_camera: bool = True  # add a `random_camera` sub-batch to every training batch
    # random-camera-datamodule settings of the random views and of the evaluation turntable
    random_camera: dict = field(default_factory=dict)
    rays_noise_scale: float = 0.0  # std of a random offset of all training rays (one per step)
    # "circle": the test renders the random-camera turntable; anything else: the test views
    render_path: str = "circle"


# ---------- reading ----------


def _need(frame: Dict[str, Any], *keys: str, where: str) -> Any:
    node = frame
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            raise UserError(
                f"co3d-datamodule: a frame in {where} has no '{'.'.join(keys[: i + 1])}' "
                "(not a CO3D frame annotation)"
            )
        node = node[key]
    return node


def read_frame_annotations(path: str) -> List[Dict[str, Any]]:
    if not os.path.isfile(path):
        raise UserError(
            f"co3d-datamodule: {path} not found; data.root_dir must be a sequence folder "
            "<dataset>/<category>/<sequence> with frame_annotations.jgz in <category>"
        )
    try:
        with gzip.open(path, "rt") as f:
            frames = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"co3d-datamodule: cannot read {path} (gzipped JSON): {e}") from e
    if not isinstance(frames, list):
        raise UserError(f"co3d-datamodule: {path} holds no list of frames")
    return frames


def _open(path: str, what: str) -> Image.Image:
    return open_image(path, what, "co3d-datamodule")


def load_depth_png(path: str, scale_adjustment: float) -> np.ndarray:
    """CO3D depth: a 16-bit PNG whose values are the bits of float16 depths; [H, W] float32,
    non-finite values 0."""
    image = _open(path, "depth map")
    bits = np.asarray(image).astype(np.uint16)
    depth = bits.view(np.float16).astype(np.float32) * float(scale_adjustment)
    depth[~np.isfinite(depth)] = 0.0
    return depth


def co3d_camera(
    viewpoint: Dict[str, Any], height: int, width: int, v2_mode: bool
) -> Tuple[np.ndarray, Tuple[float, float], Tuple[float, float]]:
    """OpenCV camera-to-world [4, 4] and pixel focal lengths / principal point of a viewpoint."""
    fx, fy = (float(v) for v in viewpoint["focal_length"])
    px, py = (float(v) for v in viewpoint["principal_point"])
    # NDC -> pixels; PyTorch3D's NDC x points left and y up, pixels go right and down
    half_x, half_y = (min(height, width) / 2.0,) * 2 if v2_mode else (width / 2.0, height / 2.0)
    focal = (fx * half_x, fy * half_y)
    principal = (width / 2.0 - px * half_x, height / 2.0 - py * half_y)
    R = np.asarray(viewpoint["R"], dtype=np.float64).reshape(3, 3)
    T = np.asarray(viewpoint["T"], dtype=np.float64).reshape(3)
    # X_cam = X_world @ R + T, so X_world = (X_cam - T) @ R^T: rotation R, centre -R T
    pose = np.eye(4)
    pose[:3, :3] = R
    pose[:3, 3] = -R @ T
    return pose @ PYTORCH3D_TO_OPENCV, focal, principal


def normalising_transform(c2w: np.ndarray, radius: float) -> Tuple[np.ndarray, float]:
    """The rigid map (rotation to +z up, then recentring) and scale of the normalised world, from
    OpenCV camera-to-world matrices [N, 4, 4]."""
    R, t = c2w[:, :3, :3], c2w[:, :3, 3]
    world_up = (-R[:, :, 1]).mean(0)  # the cameras' up (-y) directions
    world_up = world_up / np.linalg.norm(world_up)
    z = np.array([0.0, 0.0, 1.0])
    c = float(world_up @ z)
    cross = np.cross(world_up, z)
    skew = np.array(
        [[0.0, -cross[2], cross[1]], [cross[2], 0.0, -cross[0]], [-cross[1], cross[0], 0.0]]
    )
    if c > -1:
        align = np.eye(3) + skew + skew @ skew / (1 + c)  # Rodrigues: world_up -> +z
    else:  # up is -z: turn half a turn about x
        align = np.diag([1.0, -1.0, -1.0])
    forward = (align @ R)[:, :, 2]
    t = t @ align.T
    # the point of each central ray closest to the origin; their median is the new origin
    nearest = t + ((-t * forward).sum(-1, keepdims=True)) * forward
    translate = -np.median(nearest, axis=0)
    transform = np.eye(4)
    transform[:3, :3] = align
    transform[:3, 3] = translate
    scale = radius / float(np.median(np.linalg.norm(t + translate, axis=-1)))
    return transform, scale


def mask_box(mask: np.ndarray, threshold: float, context: float, where: str) -> np.ndarray:
    """[x0, y0, x1, y1] (exclusive ends, integers) of the mask's box grown by ``context``."""
    passing = mask > threshold
    while passing.sum() <= 1 and threshold > -1:
        threshold -= 0.05
        passing = mask > threshold
    if threshold <= 0:
        threestudio.warn(f"co3d-datamodule: empty mask in {where}; using the whole image")
    cols, rows = np.flatnonzero(passing.any(0)), np.flatnonzero(passing.any(1))
    x, y, w, h = cols[0], rows[0], cols[-1] - cols[0], rows[-1] - rows[0]
    x, y, w, h = x - w * context / 2, y - h * context / 2, w * (1 + context), h * (1 + context)
    if w <= 1 or h <= 1:
        raise UserError(f"co3d-datamodule: the mask of {where} covers a line, not an object")
    w, h = max(w, 2), max(h, 2)
    box = np.array([x, y, x + w + 1, y + h + 1])
    box[[0, 2]] = np.clip(box[[0, 2]], 0, mask.shape[1])
    box[[1, 3]] = np.clip(box[[1, 3]], 0, mask.shape[0])
    return box.round().astype(np.int64)


def fit_into(
    image: np.ndarray, height: int, width: int
) -> Tuple[Float[Tensor, "H W C"], Tuple[float, float]]:
    """Resize [h, w, C] by one factor so it fits ``height`` x ``width`` and paste it top-left
    into zeros; also the actual (x, y) scale of the pasted part."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    factor = min(height / h, width / w)
    new_h, new_w = min(height, int(math.floor(h * factor))), min(width, int(math.floor(w * factor)))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    out = torch.zeros(image.shape[-1], height, width)
    out[:, :new_h, :new_w] = x[0]
    return out.permute(1, 2, 0), (new_w / w, new_h / h)


@dataclass
class Co3dCapture:
    """Every usable view of a sequence, normalised, cropped and resized (all splits)."""

    images: Float[Tensor, "N H W 3"]
    masks: Float[Tensor, "N H W 1"]
    depths: Float[Tensor, "N H W 1"]
    directions: Float[Tensor, "N H W 3"]  # OpenGL camera space, unnormalised
    c2w: Float[Tensor, "N 4 4"]  # OpenGL camera-to-world in the normalised world
    focals: Float[Tensor, "N 2"]  # pixel focal lengths after cropping/resizing
    principals: Float[Tensor, "N 2"]  # pixel principal points after cropping/resizing
    frame_names: List[str]  # the image path of each view
    world_to_normalised: Float[Tensor, "4 4"]  # capture world -> normalised world (with scale)


def load_co3d_capture(cfg: Any) -> Co3dCapture:
    root = os.path.normpath(shipped_path(cfg.root_dir)) if cfg.root_dir else ""
    if not root:
        raise ConfigError("data.root_dir is empty: give a CO3D sequence folder")
    if not os.path.isdir(root):
        raise UserError(f"co3d-datamodule: data.root_dir {root} is not a folder")
    sequence = os.path.basename(root)
    annotations = os.path.join(os.path.dirname(root), "frame_annotations.jgz")
    dataset_root = os.path.dirname(os.path.dirname(root))
    frames = [f for f in read_frame_annotations(annotations) if f.get("sequence_name") == sequence]
    if not frames:
        raise UserError(f"co3d-datamodule: {annotations} has no frame of sequence '{sequence}'")

    views = []
    for frame in frames:
        if "unseen" in str(frame.get("meta", {}).get("frame_type", "")):
            continue
        image_path = _need(frame, "image", "path", where=annotations)
        where = f"{annotations} ({image_path})"
        height, width = (int(v) for v in _need(frame, "image", "size", where=where))
        for key in ("R", "T", "focal_length", "principal_point"):
            _need(frame, "viewpoint", key, where=where)
        viewpoint = frame["viewpoint"]
        pose, focal, principal = co3d_camera(viewpoint, height, width, cfg.v2_mode)
        if any(np.array_equal(pose, v["pose"]) for v in views):
            continue  # a repeated camera
        image = _open(os.path.join(dataset_root, image_path), "image")
        if (image.height, image.width) != (height, width):
            raise UserError(
                f"co3d-datamodule: {image_path} is {image.width}x{image.height} but its "
                f"annotation says {width}x{height} (image.size is [H, W])"
            )
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        depth_path = os.path.join(dataset_root, _need(frame, "depth", "path", where=where))
        depth = load_depth_png(depth_path, frame["depth"].get("scale_adjustment", 1.0))
        if cfg.use_mask:
            mask_path = os.path.join(dataset_root, _need(frame, "mask", "path", where=where))
            mask = np.asarray(_open(mask_path, "mask").convert("L"), dtype=np.float32) / 255.0
        else:
            mask = np.ones((height, width), dtype=np.float32)
        for name, array in (("depth map", depth), ("mask", mask)):
            if array.shape != (height, width):
                raise UserError(
                    f"co3d-datamodule: the {name} of {image_path} is {array.shape[1]}x"
                    f"{array.shape[0]}, its image {width}x{height}"
                )
        views.append(
            dict(
                pose=pose,
                focal=focal,
                principal=principal,
                size=(height, width),
                rgb=rgb,
                depth=depth,
                mask=mask,
                name=image_path,
            )
        )
    if not views:
        raise UserError(f"co3d-datamodule: sequence '{sequence}' has no usable frame")

    # outliers: image sizes off the median by 10% or more, cameras far from the others
    sizes = np.array([v["size"] for v in views], dtype=np.float64)
    poses = np.stack([v["pose"] for v in views])
    inlier = (np.abs(sizes - np.median(sizes, 0)) / np.median(sizes, 0) < 0.1).all(-1)
    spread = np.linalg.norm(poses[:, :3, 3] - np.median(poses[:, :3, 3], 0), axis=-1)
    inlier &= spread < 5.0 * np.median(spread)
    if inlier.any():
        views = [v for v, keep in zip(views, inlier) if keep]
        poses = poses[inlier]

    transform, scale = normalising_transform(poses, cfg.scale_radius)
    scale = scale * cfg.cam_scale_factor
    poses = transform @ poses
    poses[:, :3, 3] *= scale
    views = views[: cfg.max_num_frames]
    poses = poses[: cfg.max_num_frames]

    out = {k: [] for k in ("images", "masks", "depths", "directions", "focals", "principals")}
    for view in views:
        rgb, mask, depth = view["rgb"], view["mask"][..., None], view["depth"][..., None] * scale
        (fx, fy), (cx, cy) = view["focal"], view["principal"]
        if cfg.box_crop:
            x0, y0, x1, y1 = mask_box(
                view["mask"], cfg.box_crop_mask_thr, cfg.box_crop_context, view["name"]
            )
            rgb, mask, depth = (a[y0:y1, x0:x1] for a in (rgb, mask, depth))
            cx, cy = cx - x0, cy - y0
        rgb, (sx, sy) = fit_into(rgb, cfg.height, cfg.width)
        mask, _ = fit_into(mask, cfg.height, cfg.width)
        depth, _ = fit_into(depth, cfg.height, cfg.width)
        focal, principal = (fx * sx, fy * sy), (cx * sx, cy * sy)
        out["images"].append(rgb)
        out["masks"].append(mask)
        out["depths"].append(depth)
        out["directions"].append(get_ray_directions(cfg.height, cfg.width, focal, principal))
        out["focals"].append(torch.tensor(focal))
        out["principals"].append(torch.tensor(principal))
    world_to_normalised = np.diag([scale, scale, scale, 1.0]) @ transform
    return Co3dCapture(
        **{k: torch.stack(v).float() for k, v in out.items()},
        c2w=torch.from_numpy(poses @ OPENCV_TO_OPENGL).float(),
        frame_names=[v["name"] for v in views],
        world_to_normalised=torch.from_numpy(world_to_normalised).float(),
    )


def split_indices(n_views: int, train_views: Optional[list]) -> Dict[str, List[int]]:
    """As the established: without ``train_views`` every tenth view is held out (val = test
    views); the "test" split is every view."""
    every = list(range(n_views))
    if train_views is None:
        held_out = every[::10]
        train = [i for i in every if i not in held_out]
    else:
        train = [int(i) for i in config_to_primitive(train_views)]
        bad = [i for i in train if not 0 <= i < n_views]
        if bad:
            raise ConfigError(
                f"data.train_views {bad} out of range: the capture has {n_views} usable views "
                f"(0..{n_views - 1})"
            )
        held_out = [i for i in every if i not in train]
    if not train:
        raise ConfigError(f"data.train_views: no training view among {n_views} views")
    return {"train": train, "val": held_out or train, "test": every}


# ---------- datasets ----------


class Co3dDatasetBase:
    def setup(self, cfg: Any, split_name: str) -> None:
        self.cfg = cfg
        splits = ("train", "val", "test")
        if split_name not in splits:
            raise ConfigError(f"data: split '{split_name}' unknown (use one of {splits})")
        self.split = split_name
        self.random_camera_cfg = parse_structured(RandomCameraDataModuleConfig, cfg.random_camera)
        self.capture = load_co3d_capture(cfg)
        self.indices = split_indices(len(self.capture.c2w), cfg.train_views)[split_name]

    def get_all_images(self) -> Float[Tensor, "N H W 3"]:
        return self.capture.images[self.indices]

    def view_batch(self, index: int, noise: Optional[torch.Generator] = None) -> Dict[str, Any]:
        """One view as a batch of one."""
        cap, i = self.capture, self.indices[index]
        c2w = cap.c2w[i : i + 1]
        rays_o, rays_d = get_rays(cap.directions[i : i + 1], c2w, keepdim=True)
        if noise is not None and self.cfg.rays_noise_scale > 0:
            # one offset for every ray of the view, as the established adds it
            scale = self.cfg.rays_noise_scale
            rays_o = rays_o + torch.randn(3, generator=noise) * scale
            rays_d = rays_d + torch.randn(3, generator=noise) * scale
        rays_d = F.normalize(rays_d, dim=-1)
        height, width = self.cfg.height, self.cfg.width
        (fx, fy), (cx, cy) = cap.focals[i].tolist(), cap.principals[i].tolist()
        proj = intrinsic_projection(fx, fy, cx, cy, height, width)[None]
        position = c2w[:, :3, 3]
        distance = position.norm(dim=-1)
        return {
            "index": torch.tensor([index]),
            "rays_o": rays_o,
            "rays_d": rays_d,
            "c2w": c2w,
            "proj_mtx": proj,
            "mvp_mtx": get_mvp_matrix(c2w, proj),
            "camera_positions": position,
            "light_positions": position,  # the light sits at the camera, as in the established
            "elevation": torch.rad2deg(torch.asin(position[:, 2] / distance)),
            "azimuth": torch.rad2deg(torch.atan2(position[:, 1], position[:, 0])),
            "camera_distances": distance,
            "fovy": 2 * torch.atan(torch.tensor([height / (2 * fy)])),
            "height": height,
            "width": width,
            "rgb": cap.images[i : i + 1],
            "mask": cap.masks[i : i + 1],
            "depth": cap.depths[i : i + 1],
            "ref_depth": cap.depths[i : i + 1],  # the name the reference-view depth losses read
        }


def intrinsic_projection(
    fx: float, fy: float, cx: float, cy: float, height: int, width: int
) -> Float[Tensor, "4 4"]:
    """OpenGL projection of a pinhole camera with these pixel intrinsics (image row 0 on top, as
    ``get_projection_matrix``), near 0.01, far 100."""
    near, far = 0.01, 100.0
    proj = torch.zeros(4, 4)
    proj[0, 0] = 2 * fx / width
    proj[0, 2] = 1 - 2 * cx / width
    proj[1, 1] = -2 * fy / height
    proj[1, 2] = 1 - 2 * cy / height
    proj[2, 2] = -(far + near) / (far - near)
    proj[2, 3] = -2 * far * near / (far - near)
    proj[3, 2] = -1.0
    return proj


class Co3dIterableDataset(IterableDataset, Co3dDatasetBase, Updateable):
    """Training: one view of the training split per step (a fresh permutation each pass), plus a
    random-camera sub-batch. A batch is a function of its step alone (``set_step`` on resume)."""

    def __init__(self, cfg: Any, split: str = "train") -> None:
        super().__init__()
        self.setup(cfg, split)
        if cfg.use_random_camera:
            self.random_pose_generator = RandomCameraIterableDataset(self.random_camera_cfg)
        self.base_seed = torch.initial_seed() % (2**31)
        self.next_step = 0

    def set_step(self, global_step: int) -> None:
        self.next_step = int(global_step)
        if self.cfg.use_random_camera:
            self.random_pose_generator.set_step(global_step)

    def __iter__(self):
        while True:
            yield {}

    def view_of_step(self, step: int) -> int:
        n = len(self.indices)
        generator = torch.Generator().manual_seed(self.base_seed * 7919 + step // n)
        return int(torch.randperm(n, generator=generator)[step % n])

    def collate(self, batch) -> Dict[str, Any]:
        step = self.next_step
        self.next_step += 1
        noise = torch.Generator().manual_seed(self.base_seed * 104729 + step)
        out = self.view_batch(self.view_of_step(step), noise)
        n_pixels = self.cfg.height * self.cfg.width
        if 0 < self.cfg.train_num_rays < n_pixels:
            # random pixels as a [1, N, 1] image
            pick = torch.randint(0, n_pixels, (self.cfg.train_num_rays,), generator=noise)
            for key in ("rays_o", "rays_d", "rgb", "mask", "depth", "ref_depth"):
                value = out[key]
                out[key] = value.reshape(1, n_pixels, -1)[:, pick, None, :]
            out["height"], out["width"] = self.cfg.train_num_rays, 1
        if self.cfg.use_random_camera:
            self.random_pose_generator.set_step(step)
            out["random_camera"] = self.random_pose_generator.collate(None)
        return out


class Co3dDataset(Dataset, Co3dDatasetBase):
    """Validation: the random-camera turntable; test: the same, or the split's views when
    ``render_path`` is not "circle" (rendered beside their images)."""

    def __init__(self, cfg: Any, split: str) -> None:
        super().__init__()
        self.setup(cfg, split)
        self.eval_split = "val" if split == "val" else "test"
        self.turntable = RandomCameraDataset(self.random_camera_cfg, self.eval_split)
        self.real_views = self.eval_split == "test" and cfg.render_path != "circle"

    def __len__(self) -> int:
        return len(self.indices) if self.real_views else len(self.turntable)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.view_batch(index) if self.real_views else self.turntable[index]

    def collate(self, batch) -> Dict[str, Any]:
        if self.real_views:
            return batch[0]  # already a batch of one
        return self.turntable.collate(batch)


@threestudio.register("co3d-datamodule")
class Co3dDataModule(RandomCameraDataModule):
    """A CO3D sequence's posed views with random views; see the module docstring."""

    cfg: Co3dDataModuleConfig
    config_class = Co3dDataModuleConfig

    def setup(self, stage=None) -> None:
        if stage in (None, "fit"):
            self.train_dataset = Co3dIterableDataset(self.cfg, self.cfg.train_split)
        if stage in (None, "fit", "validate"):
            self.val_dataset = Co3dDataset(self.cfg, self.cfg.val_split)
        if stage in (None, "test", "predict"):
            self.test_dataset = Co3dDataset(self.cfg, self.cfg.test_split)
