"""Posed photographs of a scene (a nerfstudio-style ``transforms.json``), for methods that fit or
edit a scene from its images (Instruct-NeRF2NeRF, Control4D).

The file format is the one nerfstudio's ``ns-process-data`` writes (and COLMAP-based tools
convert to)::

    {"camera_model": "OPENCV",
     "fl_x": 87.9, "fl_y": 87.9, "cx": 32.0, "cy": 32.0, "w": 64, "h": 64,
     "frames": [{"file_path": "images/frame_00001.png",
                 "transform_matrix": [[...4 numbers...], ... 4 rows]}, ...]}

The intrinsics (``fl_x, fl_y, cx, cy, w, h``, pixels) may sit in each frame or once at the top
(a frame's own values win). ``transform_matrix`` is the camera-to-world matrix in the OpenGL
convention (camera x right, y up, looking down -z), as nerfstudio stores it; it is used as it
is (as in the established threestudio: no re-orientation), so the scene's world is taken to be
this project's (x back, y right, z up): its z axis is up. Lens distortion coefficients are
ignored.

As in the established threestudio: the cameras are first re-centred (``camera_layout``), the
rays go through pixel corners (no half-pixel offset), training images are the file's size
divided by ``train_downsample_resolution`` while evaluation images are divided by
``2 ** eval_downsample_resolution``, and the point light sits at the origin.

Every training batch is one frame drawn at random (a function of the step, so a resumed run
draws the same frames): ``index`` (an int), ``rays_o``/``rays_d`` ``[1, H, W, 3]`` (unit
directions), ``mvp_mtx``/``c2w``/``proj_mtx`` ``[1, 4, 4]``, ``camera_positions``/
``light_positions`` ``[1, 3]``, ``gt_rgb`` ``[1, H, W, 3]`` in [0, 1], ``height``/``width``,
the camera's ``elevation``/``azimuth`` (degrees) and ``camera_distances`` about the origin, and
``file_index``, the frame's position in the file (``index`` counts the frames kept by the
data interval; -1 for an interpolated pose).
Validation and test batches are the frames in order (``index`` a tensor of one), or with
``eval_interpolation`` poses interpolated between two frames (their ``gt_rgb`` are black).
"""

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

import threestudio
from threestudio.data.uncond import RandomCameraDataModule
from threestudio.utils.errors import ConfigError, UserError
from threestudio.utils.ops import get_mvp_matrix, get_ray_directions, get_rays
from threestudio.utils.paths import shipped_path
from threestudio.utils.typing import Any, Dict, Float, List, Optional, Tensor, Tuple

TRANSFORMS_FILE = "transforms.json"
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
# camera models whose images are pinhole projections (distortion, if any, is ignored)
PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")
NEAR, FAR = 0.1, 1000.0  # clip planes of the projection matrices (as the established)


@dataclass
class MultiviewsDataModuleConfig:
    # folder holding transforms.json; frames' file_path values are relative to it
    dataroot: str = ""
    # training images are the file's w, h divided (integer division) by this
    train_downsample_resolution: int = 4
    # evaluation images are the file's w, h divided by 2 ** this (the established's two rules)
    eval_downsample_resolution: int = 4
    train_data_interval: int = 1  # train on every n-th frame of the file
    eval_data_interval: int = 1  # validate/test on every n-th frame of the file
    batch_size: int = 1  # frames per training step (must be 1)
    eval_batch_size: int = 1  # frames per evaluation batch (must be 1)
    # around: subtract the cameras' mean position | front: also move the point camera_distance
    # ahead of the cameras (along their mean viewing direction) to the origin
    camera_layout: str = "around"
    camera_distance: float = -1  # front layout: distance of the scene ahead of the cameras
    # (i, j, n): evaluate n poses interpolated from frame i to frame j instead of the frames
    eval_interpolation: Optional[Tuple[int, int, int]] = None


# ---------- reading the file ----------


def read_transforms(dataroot: str) -> Tuple[Dict[str, Any], str]:
    """The parsed transforms file of ``dataroot`` and its path (one-line errors for users)."""
    if not dataroot:
        raise ConfigError("data.dataroot is empty: give the folder holding transforms.json")
    root = shipped_path(dataroot)
    path = os.path.join(root, TRANSFORMS_FILE)
    if not os.path.isfile(path):
        raise UserError(
            f"multiview-camera-datamodule: no {TRANSFORMS_FILE} in data.dataroot={dataroot} "
            f"({path} not found)"
        )
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"multiview-camera-datamodule: cannot read {path}: {e}") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise UserError(f"multiview-camera-datamodule: {path} has no 'frames' list")
    if not meta["frames"]:
        raise UserError(f"multiview-camera-datamodule: {path} lists no frames")
    model = meta.get("camera_model", "OPENCV")
    if model not in PINHOLE_MODELS:
        raise UserError(
            f"multiview-camera-datamodule: {path}: camera_model '{model}' is not supported "
            f"(use undistorted images with one of {', '.join(PINHOLE_MODELS)})"
        )
    return meta, path


def frame_intrinsics(meta: Dict[str, Any], frame: Dict[str, Any], i: int, path: str):
    """``(fl_x, fl_y, cx, cy, w, h)`` of frame ``i`` in pixels: its own values, else the file's."""
    values = []
    for key in INTRINSIC_KEYS:
        value = frame.get(key, meta.get(key))
        if value is None:
            raise UserError(f"multiview-camera-datamodule: {path}: frame {i} has no '{key}'")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UserError(
                f"multiview-camera-datamodule: {path}: frame {i} '{key}' is not a number: {value!r}"
            ) from None
        if not math.isfinite(value):
            raise UserError(f"multiview-camera-datamodule: {path}: frame {i} '{key}' is {value}")
        values.append(value)
    fx, fy, cx, cy, w, h = values
    for key, value in (("fl_x", fx), ("fl_y", fy), ("w", w), ("h", h)):
        if value <= 0:
            raise UserError(
                f"multiview-camera-datamodule: {path}: frame {i} '{key}' must be positive, "
                f"got {value:g}"
            )
    if w != int(w) or h != int(h):
        raise UserError(
            f"multiview-camera-datamodule: {path}: frame {i} w, h must be whole pixels, "
            f"got {w:g} x {h:g}"
        )
    return fx, fy, cx, cy, int(w), int(h)


def frame_pose(frame: Dict[str, Any], i: int, path: str) -> Float[Tensor, "4 4"]:
    matrix = frame.get("transform_matrix")
    try:
        c2w = torch.as_tensor(matrix, dtype=torch.float32)
    except (TypeError, ValueError):
        c2w = None
    if c2w is None or c2w.shape != (4, 4) or not torch.isfinite(c2w).all():
        raise UserError(
            f"multiview-camera-datamodule: {path}: frame {i} needs a 4x4 'transform_matrix'"
        )
    return c2w


def layout_poses(
    c2w: Float[Tensor, "N 4 4"], layout: str, camera_distance: float
) -> Float[Tensor, "N 4 4"]:
    """Re-centre the cameras: their mean position to the origin (``around``), then, for
    ``front``, the point ``camera_distance`` ahead of them (mean viewing direction) too."""
    c2w = c2w.clone()
    if layout not in ("around", "front"):
        raise ConfigError(
            f"data.camera_layout: unknown layout '{layout}' (use 'around' or 'front')"
        )
    c2w[:, :3, 3] -= c2w[:, :3, 3].mean(dim=0, keepdim=True)
    if layout == "front":
        if camera_distance <= 0:
            raise ConfigError(
                f"data.camera_distance must be positive for camera_layout=front, "
                f"got {camera_distance}"
            )
        forward = -c2w[:, :3, 2].mean(dim=0, keepdim=True)  # the cameras look down -z
        c2w[:, :3, 3] -= forward * camera_distance
    return c2w


def opencv_projection(
    fx: float, fy: float, cx: float, cy: float, width: int, height: int
) -> Float[Tensor, "4 4"]:
    """OpenGL projection of a pinhole camera (y flipped so row 0 is the image top, as
    ``get_projection_matrix``): pixel ``(u, v)`` of the image maps to NDC ``(2u/W - 1, 2v/H - 1)``."""
    proj = torch.zeros(4, 4, dtype=torch.float32)
    proj[0, 0] = 2 * fx / width
    proj[0, 2] = (width - 2 * cx) / width
    proj[1, 1] = -2 * fy / height
    proj[1, 2] = (height - 2 * cy) / height
    proj[2, 2] = -(FAR + NEAR) / (FAR - NEAR)
    proj[2, 3] = -2 * FAR * NEAR / (FAR - NEAR)
    proj[3, 2] = -1.0
    return proj


def _quaternion(R: Float[Tensor, "3 3"]) -> Float[Tensor, "4"]:
    """Unit quaternion (w, x, y, z) of a rotation matrix."""
    m = R.double()
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = torch.sqrt(trace + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = torch.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = torch.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = torch.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in q])
    return q / q.norm()


def _rotation(q: Float[Tensor, "4"]) -> Float[Tensor, "3 3"]:
    w, x, y, z = q / q.norm()
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)]),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)]),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]),
        ]
    )


def interpolate_pose(
    c2w_0: Float[Tensor, "4 4"], c2w_1: Float[Tensor, "4 4"], ratio: float
) -> Float[Tensor, "4 4"]:
    """The camera a fraction ``ratio`` of the way from ``c2w_0`` to ``c2w_1``: as the
    established, the world-to-camera rotations are slerped and their translations mixed
    linearly."""
    w2c_0, w2c_1 = torch.linalg.inv(c2w_0.double()), torch.linalg.inv(c2w_1.double())
    q0, q1 = _quaternion(w2c_0[:3, :3]), _quaternion(w2c_1[:3, :3])
    cos = float(torch.dot(q0, q1))
    if cos < 0:  # the shorter way round
        q1, cos = -q1, -cos
    if cos > 0.9995:
        q = (1 - ratio) * q0 + ratio * q1
    else:
        theta = math.acos(min(cos, 1.0))
        q = (math.sin((1 - ratio) * theta) * q0 + math.sin(ratio * theta) * q1) / math.sin(theta)
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = _rotation(q)
    w2c[:3, 3] = (1 - ratio) * w2c_0[:3, 3] + ratio * w2c_1[:3, 3]
    return torch.linalg.inv(w2c).float()


def read_image(path: str, i: int, height: int, width: int) -> Float[Tensor, "H W 3"]:
    """Frame ``i``'s image as RGB in [0, 1] at ``height`` x ``width`` (alpha dropped; resized
    bilinearly without antialiasing, as OpenCV's default resize that the established uses)."""
    if not os.path.isfile(path):
        raise UserError(f"multiview-camera-datamodule: frame {i}: image not found: {path}")
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as e:
        raise UserError(f"multiview-camera-datamodule: frame {i}: cannot read {path}: {e}") from e
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    if tuple(x.shape[-2:]) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).contiguous()


def _divided(size: int, divisor: int, key: str) -> int:
    out = size // divisor
    if out < 1:
        raise ConfigError(f"{key}: the images ({size} px) divided by {divisor} leave nothing")
    return out


def camera_angles(
    positions: Float[Tensor, "N 3"],
) -> Tuple[Float[Tensor, "N"], Float[Tensor, "N"], Float[Tensor, "N"]]:
    """Elevation, azimuth (degrees; azimuth 0 on +x) and distance of cameras about the origin."""
    distance = positions.norm(dim=-1)
    elevation = torch.rad2deg(torch.asin((positions[:, 2] / distance.clamp_min(1e-8)).clamp(-1, 1)))
    azimuth = torch.rad2deg(torch.atan2(positions[:, 1], positions[:, 0]))
    return elevation, azimuth, distance


# ---------- the frames as tensors ----------


class MultiviewFrames:
    """Every selected frame's camera (and image) at one resolution, as stacked tensors."""

    def __init__(self, cfg: Any, split: str) -> None:
        self.cfg = cfg
        train = split == "train"
        if (cfg.batch_size if train else cfg.eval_batch_size) != 1:
            key = "data.batch_size" if train else "data.eval_batch_size"
            raise ConfigError(f"{key} must be 1 (one frame per batch)")
        if train:
            key, divisor = "data.train_downsample_resolution", int(cfg.train_downsample_resolution)
            if divisor < 1:
                raise ConfigError(f"{key} must be at least 1, got {divisor}")
        else:
            key = "data.eval_downsample_resolution"
            if int(cfg.eval_downsample_resolution) < 0:
                raise ConfigError(f"{key} must be at least 0, got {cfg.eval_downsample_resolution}")
            divisor = 2 ** int(cfg.eval_downsample_resolution)
        interval_key = "train_data_interval" if train else "eval_data_interval"
        interval = int(cfg[interval_key])
        if interval < 1:
            raise ConfigError(f"data.{interval_key} must be at least 1, got {interval}")

        meta, path = read_transforms(cfg.dataroot)
        root = os.path.dirname(path)
        frames = meta["frames"][::interval]
        ids = list(range(len(meta["frames"])))[::interval]  # positions in the file, for messages
        intrinsics = [frame_intrinsics(meta, f, i, path) for f, i in zip(frames, ids)]
        sizes = {(w, h) for *_, w, h in intrinsics}
        if len(sizes) > 1:
            raise UserError(
                f"multiview-camera-datamodule: {path}: frames have different sizes "
                f"{sorted(sizes)}; resize them to one size"
            )
        full_w, full_h = intrinsics[0][4], intrinsics[0][5]
        self.width, self.height = _divided(full_w, divisor, key), _divided(full_h, divisor, key)
        c2w_all = torch.stack([frame_pose(f, i, path) for f, i in zip(frames, ids)])
        c2w_all = layout_poses(c2w_all, cfg.camera_layout, cfg.camera_distance)

        # (intrinsics in pixels of the resized image, c2w, image or None) per evaluated camera
        cameras: List[Tuple[Tuple[float, float, float, float], Tensor, Optional[Tensor]]] = []
        if not train and cfg.eval_interpolation is not None:
            if len(cfg.eval_interpolation) != 3:
                raise ConfigError(
                    "data.eval_interpolation must be (first frame, last frame, count)"
                )
            i0, i1, count = (int(v) for v in cfg.eval_interpolation)
            for i in (i0, i1):
                if not 0 <= i < len(frames):
                    raise ConfigError(
                        f"data.eval_interpolation: frame {i} is not among the {len(frames)} "
                        "evaluation frames"
                    )
            if count < 1:
                raise ConfigError(f"data.eval_interpolation: count must be positive, got {count}")
            fx, fy, cx, cy, *_ = intrinsics[i0]
            scaled = (fx / divisor, fy / divisor, cx / divisor, cy / divisor)
            for ratio in np.linspace(0.0, 1.0, count):
                pose = interpolate_pose(c2w_all[i0], c2w_all[i1], float(ratio))
                cameras.append((scaled, pose, None))
            file_indices = [-1] * len(cameras)
        else:
            for n, (frame, i) in enumerate(zip(frames, ids)):
                fx, fy, cx, cy, *_ = intrinsics[n]
                scaled = (fx / divisor, fy / divisor, cx / divisor, cy / divisor)
                file_path = frame.get("file_path")
                if not file_path:
                    raise UserError(
                        f"multiview-camera-datamodule: {path}: frame {i} has no 'file_path'"
                    )
                image = read_image(os.path.join(root, file_path), i, self.height, self.width)
                cameras.append((scaled, c2w_all[n], image))
            file_indices = ids

        H, W = self.height, self.width
        directions, projections, c2ws, images = [], [], [], []
        for (fx, fy, cx, cy), c2w, image in cameras:
            directions.append(get_ray_directions(H, W, (fx, fy), (cx, cy), use_pixel_centers=False))
            projections.append(opencv_projection(fx, fy, cx, cy, W, H))
            c2ws.append(c2w)
            images.append(image if image is not None else torch.zeros(H, W, 3))
        self.n_frames = len(cameras)
        # each camera's frame in the file (-1: an interpolated pose), whatever the intervals
        self.file_indices: List[int] = list(file_indices)
        self.c2w: Float[Tensor, "N 4 4"] = torch.stack(c2ws)
        self.proj_mtx: Float[Tensor, "N 4 4"] = torch.stack(projections)
        self.directions: Float[Tensor, "N H W 3"] = torch.stack(directions)
        self.rays_o, self.rays_d = get_rays(self.directions, self.c2w, keepdim=True, normalize=True)
        self.mvp_mtx: Float[Tensor, "N 4 4"] = get_mvp_matrix(self.c2w, self.proj_mtx)
        self.camera_positions: Float[Tensor, "N 3"] = self.c2w[:, :3, 3].clone()
        # the established puts the point light at the origin
        self.light_positions: Float[Tensor, "N 3"] = torch.zeros_like(self.camera_positions)
        self.gt_rgb: Float[Tensor, "N H W 3"] = torch.stack(images)
        self.elevation, self.azimuth, self.camera_distances = camera_angles(self.camera_positions)
        threestudio.debug(
            f"multiview-camera-datamodule: {self.n_frames} {split} frames at {W}x{H} from {path}"
        )

    def item(self, index: int) -> Dict[str, Any]:
        """Frame ``index``'s tensors without a batch dimension."""
        return {
            "index": index,
            "file_index": self.file_indices[index],
            "rays_o": self.rays_o[index],
            "rays_d": self.rays_d[index],
            "mvp_mtx": self.mvp_mtx[index],
            "c2w": self.c2w[index],
            "proj_mtx": self.proj_mtx[index],
            "camera_positions": self.camera_positions[index],
            "light_positions": self.light_positions[index],
            "gt_rgb": self.gt_rgb[index],
            "elevation": self.elevation[index],
            "azimuth": self.azimuth[index],
            "camera_distances": self.camera_distances[index],
        }


class MultiviewIterableDataset(IterableDataset):
    """Training: one frame per step, drawn uniformly from a generator seeded by (seed, step)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.frames = MultiviewFrames(cfg, "train")
        self.n_frames = self.frames.n_frames
        self.frame_h, self.frame_w = self.frames.height, self.frames.width
        self.base_seed = torch.initial_seed() % (2**31)
        self.next_step = 0
        self.generator = torch.Generator()

    def set_step(self, global_step: int) -> None:
        """The step whose batch the next ``collate`` produces (set on start and on resume)."""
        self.next_step = int(global_step)

    def index_at(self, step: int) -> int:
        """The frame trained on at ``step``."""
        self.generator.manual_seed(self.base_seed * 1_000_003 + int(step))
        return int(torch.randint(0, self.n_frames, (1,), generator=self.generator).item())

    def __iter__(self):
        while True:
            yield {}

    def collate(self, batch) -> Dict[str, Any]:
        step = self.next_step
        self.next_step += 1
        index = self.index_at(step)
        out = {k: v[None] if torch.is_tensor(v) else v for k, v in self.frames.item(index).items()}
        out.update(height=self.frame_h, width=self.frame_w)
        return out


class MultiviewDataset(Dataset):
    """Validation/test: the frames in file order (or the interpolated poses)."""

    def __init__(self, cfg: Any, split: str) -> None:
        super().__init__()
        self.cfg = cfg
        self.split = split
        self.frames = MultiviewFrames(cfg, split)
        self.n_frames = self.frames.n_frames
        self.frame_h, self.frame_w = self.frames.height, self.frames.width

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.frames.item(index)

    def collate(self, batch) -> Dict[str, Any]:
        batch = torch.utils.data.default_collate(batch)
        batch.update(height=self.frame_h, width=self.frame_w)
        return batch


@threestudio.register("multiview-camera-datamodule")
class MultiviewDataModule(RandomCameraDataModule):
    """Posed images from a transforms.json; see the module docstring. The loaders are the
    random-camera datamodule's, over the multi-view datasets."""

    cfg: MultiviewsDataModuleConfig
    config_class = MultiviewsDataModuleConfig
    train_dataset_class = MultiviewIterableDataset
    eval_dataset_class = MultiviewDataset
