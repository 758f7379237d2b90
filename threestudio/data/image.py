"""One reference image seen from a known camera, plus random cameras around it, for image-to-3D
(zero123, magic123).

Every training batch holds the reference view (``rgb``, ``mask`` and, when asked for, the
``ref_depth``/``ref_normal`` maps next to the image) with its camera's rays and matrices, and a
``random_camera`` sub-batch drawn by the random-camera datamodule from ``random_camera``'s
settings. Validation and test batches are the random-camera datamodule's turntable.

Files: ``<name>_rgba.png`` (or an RGB image with ``mask_path``), ``<name>_depth.png`` and
``<name>_normal.png`` beside it. Conventions follow the established threestudio so that the
files its preprocessing writes load unchanged: depth is the first channel scaled to [0, 1]
(``[1, H, W]``, no channel axis), normals are the file's channels in B, G, R order (as OpenCV
reads them) scaled to [0, 1], and the mask is the alpha (or mask file) above one half, resized
first. World axes: x back, y right, z up; azimuth 0 looks at the object from +x.
"""

import bisect
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

import threestudio
from threestudio.data.uncond import (
    RandomCameraDataModule,
    RandomCameraDataModuleConfig,
    RandomCameraDataset,
    RandomCameraIterableDataset,
    _as_list,
    check_sizes,
    make_camera_batch,
    spherical_to_cartesian,
)
from threestudio.utils.base import Updateable
from threestudio.utils.config import parse_structured
from threestudio.utils.errors import ConfigError, UserError
from threestudio.utils.misc import get_rank
from threestudio.utils.paths import shipped_path
from threestudio.utils.typing import Any, Dict, Float, List, Optional, Tensor

# an image whose width/height differs from the render's by more than this is refused, not squashed
ASPECT_TOLERANCE = 0.01


@dataclass
class SingleImageDataModuleConfig:
    # reference view's training height; a list: one value per resolution milestone
    height: Any = 96
    width: Any = 96  # like height
    # steps at which the next height/width take over (one fewer than the values)
    resolution_milestones: List[int] = field(default_factory=lambda: [])
    default_elevation_deg: float = 0.0  # reference camera's elevation, degrees
    default_azimuth_deg: float = -180.0  # reference camera's azimuth, degrees (0: from +x)
    default_camera_distance: float = 1.2  # reference camera's distance from the origin
    default_fovy_deg: float = 60.0  # reference camera's vertical field of view, degrees
    # the reference image: RGBA, or RGB with mask_path; depth/normal maps sit beside it
    image_path: str = ""
    # optional mask image for an image without alpha (foreground: values above one half)
    mask_path: str = ""
    use_random_camera: bool = True  # add a `random_camera` sub-batch to every training batch
    # random-camera-datamodule settings of the random views and of the evaluation turntable
    random_camera: dict = field(default_factory=dict)
    rays_noise_scale: float = 2e-3  # std of a fixed jitter of the reference rays (per resolution)
    # unused, as in the established: the reference batch is one camera (random views: random_camera)
    batch_size: int = 1
    requires_depth: bool = False  # load <name>_depth.png beside <name>_rgba.png as ref_depth
    requires_normal: bool = False  # load <name>_normal.png beside <name>_rgba.png as ref_normal
    rays_d_normalize: bool = True  # unit-length reference ray directions
    # even ranks draw random views at the reference camera's distance and fovy, odd ranks at random
    use_mixed_camera_config: bool = False


def companion_path(image_path: str, kind: str) -> str:
    """``<name>_depth.png`` / ``<name>_normal.png`` beside ``<name>_rgba.png`` (or ``<name>.png``)."""
    root, ext = os.path.splitext(image_path)
    if root.endswith("_rgba"):
        root = root[: -len("_rgba")]
    return f"{root}_{kind}{ext}"


def open_image(path: str, what: str, owner: str = "single-image-datamodule") -> Image.Image:
    """The image file, loaded; a missing or unreadable one is a UserError naming it (and the
    datamodule, ``owner``, that wanted it)."""
    if not os.path.isfile(path):
        raise UserError(f"{owner}: {what} not found: {path}")
    try:
        image = Image.open(path)
        image.load()
    except OSError as e:
        raise UserError(f"{owner}: cannot read {what} {path}: {e}") from e
    return image


def _to_float(image: Image.Image) -> np.ndarray:
    """[H, W, C] float32 in [0, 1]; 16-bit images are scaled by 65535."""
    array = np.asarray(image)
    scale = 65535.0 if array.dtype == np.uint16 or image.mode.startswith("I") else 255.0
    array = array.astype(np.float32) / scale
    return array[..., None] if array.ndim == 2 else array


def _resize(array: np.ndarray, height: int, width: int) -> Float[Tensor, "H W C"]:
    """Area-average when shrinking (OpenCV's INTER_AREA, as the established), bilinear otherwise."""
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    if (height, width) != tuple(x.shape[-2:]):
        if height <= x.shape[-2] and width <= x.shape[-1]:
            x = F.interpolate(x, size=(height, width), mode="area")
        else:
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).contiguous()


def _check_aspect(path: str, image: Image.Image, heights: List[int], widths: List[int]) -> None:
    for h, w in zip(heights, widths):
        if abs(image.width / image.height - w / h) > ASPECT_TOLERANCE * (w / h):
            shape = "square" if h == w else f"{w}:{h} (width:height)"
            raise ConfigError(
                f"single-image-datamodule: {path} is {image.width}x{image.height} but "
                f"data.width/height {w}x{h} need it {shape}; crop or pad it, don't stretch it"
            )


class SingleImageDataBase:
    """The reference view at every training resolution (built once in ``setup``)."""

    def setup(self, cfg: Any, split: str) -> None:
        # cfg: the parsed SingleImageDataModuleConfig (a DictConfig, not the dataclass)
        self.cfg = cfg
        self.split = split
        self.rank = get_rank()
        self.heights: List[int] = [int(h) for h in _as_list(cfg.height)]
        self.widths: List[int] = [int(w) for w in _as_list(cfg.width)]
        n = len(self.heights)
        if len(self.widths) != n:
            raise ConfigError("data: height and width need the same number of values")
        milestones = list(cfg.resolution_milestones)
        if n == 1:
            if milestones:
                threestudio.warn(
                    "data.resolution_milestones is ignored: height and width have one value"
                )
            milestones = []
        elif len(milestones) != n - 1:
            raise ConfigError(
                f"data.resolution_milestones needs {n - 1} step(s) for {n} resolutions, "
                f"got {milestones}"
            )
        elif milestones != sorted(milestones):
            raise ConfigError("data.resolution_milestones must increase")
        self.resolution_milestones = [0] + milestones
        self.random_camera_cfg = self._random_camera_config()

    def _random_camera_config(self) -> Any:
        # the parsed RandomCameraDataModuleConfig (a DictConfig, not the dataclass)
        random_cfg = parse_structured(RandomCameraDataModuleConfig, self.cfg.random_camera)
        check_sizes(random_cfg, "data.random_camera")
        self.fixed_camera_intrinsic = False
        if self.cfg.use_mixed_camera_config and self.rank % 2 == 0:
            distance, fovy = self.cfg.default_camera_distance, self.cfg.default_fovy_deg
            random_cfg.camera_distance_range = (distance, distance)
            random_cfg.fovy_range = (fovy, fovy)
            self.fixed_camera_intrinsic = True
        return random_cfg

    # ---------- the reference camera ----------

    def reference_camera(self, height: int, width: int, noise_seed: int) -> Dict[str, Any]:
        elevation = torch.tensor([self.cfg.default_elevation_deg], dtype=torch.float32)
        azimuth = torch.tensor([self.cfg.default_azimuth_deg], dtype=torch.float32)
        distance = torch.tensor([self.cfg.default_camera_distance], dtype=torch.float32)
        fovy_deg = torch.tensor([self.cfg.default_fovy_deg], dtype=torch.float32)
        # the light sits at the camera, as in the established
        light = spherical_to_cartesian(elevation, azimuth, distance)
        camera = make_camera_batch(
            elevation, azimuth, distance, fovy_deg, height, width, light, rays_d_normalize=False
        )
        if self.cfg.rays_noise_scale > 0:
            # one offset for all rays, fixed per resolution (the established draws it once too);
            # its own generator leaves the training random stream alone
            gen = torch.Generator().manual_seed(noise_seed)
            scale = self.cfg.rays_noise_scale
            camera["rays_o"] = camera["rays_o"] + torch.randn(3, generator=gen) * scale
            camera["rays_d"] = camera["rays_d"] + torch.randn(3, generator=gen) * scale
        if self.cfg.rays_d_normalize:
            camera["rays_d"] = F.normalize(camera["rays_d"], dim=-1)
        return camera

    # ---------- the reference images ----------

    def load_images(self) -> None:
        """Read the files once; ``images_at`` resizes them for each resolution."""
        path = shipped_path(self.cfg.image_path)
        if not path:
            raise ConfigError("data.image_path is empty: give the reference image")
        image = open_image(path, "image")
        _check_aspect(path, image, self.heights, self.widths)
        has_alpha = image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        )
        if self.cfg.mask_path:
            mask_path = shipped_path(self.cfg.mask_path)
            mask_image = open_image(mask_path, "mask")
            _check_aspect(mask_path, mask_image, self.heights, self.widths)
            alpha = _to_float(mask_image.convert("L"))
        elif has_alpha:
            alpha = _to_float(image.convert("RGBA"))[..., 3:]
        else:
            raise UserError(
                f"single-image-datamodule: {path} has no alpha channel; give an RGBA image "
                "or a mask in data.mask_path"
            )
        rgb = _to_float(image.convert("RGB"))
        self.source_rgb, self.source_alpha = rgb, alpha
        self.source_depth = self.source_normal = None
        if self.cfg.requires_depth:
            depth_path = companion_path(path, "depth")
            depth = open_image(depth_path, "depth map (data.requires_depth)")
            _check_aspect(depth_path, depth, self.heights, self.widths)
            self.source_depth = _to_float(depth)[..., :1]
        if self.cfg.requires_normal:
            normal_path = companion_path(path, "normal")
            normal = open_image(normal_path, "normal map (data.requires_normal)")
            _check_aspect(normal_path, normal, self.heights, self.widths)
            # B, G, R: the channel order the established reads with OpenCV
            self.source_normal = _to_float(normal.convert("RGB"))[..., ::-1]
        threestudio.debug(f"single-image-datamodule: loaded {path} ({image.width}x{image.height})")

    def images_at(self, height: int, width: int) -> Dict[str, Optional[Tensor]]:
        rgb: Float[Tensor, "1 H W 3"] = _resize(self.source_rgb, height, width)[None]
        mask = _resize(self.source_alpha, height, width)[None] > 0.5  # bool [1, H, W, 1]
        depth = normal = None
        if self.source_depth is not None:
            depth = _resize(self.source_depth, height, width)[None, ..., 0]  # [1, H, W]
        if self.source_normal is not None:
            normal = _resize(self.source_normal, height, width)[None]  # [1, H, W, 3]
        return {"rgb": rgb, "mask": mask, "ref_depth": depth, "ref_normal": normal}

    def get_all_images(self) -> Float[Tensor, "1 H W 3"]:
        return self.rgb


class SingleImageIterableDataset(IterableDataset, SingleImageDataBase, Updateable):
    """Training: the reference view (at the step's resolution) plus a random-camera sub-batch.

    Like the random-camera dataset, a batch is a function of its step alone (``collate`` counts
    steps; ``set_step`` on resume), since Lightning prefetches batches before ``update_step``."""

    def __init__(self, cfg: Any, split: str = "train") -> None:
        super().__init__()
        self.setup(cfg, split)
        if self.cfg.use_random_camera:
            self.random_pose_generator = RandomCameraIterableDataset(self.random_camera_cfg)
        self.load_images()
        base_seed = torch.initial_seed() % (2**31)
        self.references: List[Dict[str, Any]] = []
        for i, (h, w) in enumerate(zip(self.heights, self.widths)):
            reference = self.reference_camera(h, w, noise_seed=base_seed * 1_000_003 + i)
            reference.update(self.images_at(h, w))
            self.references.append(reference)
        self.next_step = 0
        self.set_resolution(0)

    def set_resolution(self, global_step: int) -> None:
        size_ind = bisect.bisect_right(self.resolution_milestones, global_step) - 1
        reference = self.references[max(size_ind, 0)]
        self.height, self.width = reference["height"], reference["width"]
        self.rays_o, self.rays_d = reference["rays_o"], reference["rays_d"]
        self.mvp_mtx, self.c2w = reference["mvp_mtx"], reference["c2w"]
        self.rgb, self.mask = reference["rgb"], reference["mask"]
        self.depth, self.normal = reference["ref_depth"], reference["ref_normal"]
        self.reference = reference

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False):
        # the random-camera dataset is an attribute, so it was updated before this
        self.set_resolution(global_step)

    def set_step(self, global_step: int) -> None:
        """The step whose batch the next ``collate`` produces (set on start and on resume)."""
        self.next_step = int(global_step)
        if self.cfg.use_random_camera:
            self.random_pose_generator.set_step(global_step)

    def __iter__(self):
        while True:
            yield {}

    def collate(self, batch) -> Dict[str, Any]:
        step = self.next_step
        self.next_step += 1
        self.set_resolution(step)
        ref = self.reference
        out = {
            "rays_o": ref["rays_o"],
            "rays_d": ref["rays_d"],
            "mvp_mtx": ref["mvp_mtx"],
            "camera_positions": ref["camera_positions"],
            "light_positions": ref["light_positions"],
            "elevation": ref["elevation"],
            "azimuth": ref["azimuth"],
            "camera_distances": ref["camera_distances"],
            "rgb": ref["rgb"],
            "ref_depth": ref["ref_depth"],
            "ref_normal": ref["ref_normal"],
            "mask": ref["mask"],
            "height": ref["height"],
            "width": ref["width"],
            "c2w": ref["c2w"],
            "fovy": ref["fovy"],
            "proj_mtx": ref["proj_mtx"],
        }
        if self.cfg.use_random_camera:
            self.random_pose_generator.set_step(step)
            out["random_camera"] = self.random_pose_generator.collate(None)
        return out


class SingleImageDataset(Dataset, SingleImageDataBase):
    """Validation/test: the turntable of ``random_camera``'s eval settings (no image needed)."""

    def __init__(self, cfg: Any, split: str) -> None:
        super().__init__()
        self.setup(cfg, split)
        self.random_pose_generator = RandomCameraDataset(self.random_camera_cfg, split)

    def __len__(self) -> int:
        return len(self.random_pose_generator)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.random_pose_generator[index]

    def collate(self, batch) -> Dict[str, Any]:
        return self.random_pose_generator.collate(batch)


@threestudio.register("single-image-datamodule")
class SingleImageDataModule(RandomCameraDataModule):
    """The reference image and its camera, with random views; see the module docstring."""

    cfg: SingleImageDataModuleConfig
    config_class = SingleImageDataModuleConfig
    train_dataset_class = SingleImageIterableDataset
    eval_dataset_class = SingleImageDataset

    def setup(self, stage=None) -> None:
        if stage in (None, "fit"):
            self.train_dataset = self.train_dataset_class(self.cfg, "train")
        if stage in (None, "fit", "validate"):
            self.val_dataset = self.eval_dataset_class(self.cfg, "val")
        if stage in (None, "test", "predict"):
            self.test_dataset = self.eval_dataset_class(self.cfg, "test")
