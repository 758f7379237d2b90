"""Random cameras around the origin, for text-to-3D training without images.

Training batches are drawn in ``collate`` (the iterable dataset yields nothing else), so the
sampling follows the global torch RNG and a resumed run continues the same camera stream.
World axes: x back, y right, z up; azimuth 0 looks at the object from +x (its front).
"""

import bisect
import math
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset

import threestudio
from threestudio.utils.base import Updateable
from threestudio.utils.config import config_to_primitive, parse_structured
from threestudio.utils.errors import ConfigError
from threestudio.utils.ops import (
    get_mvp_matrix,
    get_projection_matrix,
    get_ray_directions,
    get_rays,
)
from threestudio.utils.typing import Any, Dict, Float, List, Optional, Tensor, Tuple, Union


@dataclass
class RandomCameraDataModuleConfig:
    # training render height; a list: one value per resolution milestone (batch_size too)
    height: Any = 64
    width: Any = 64  # like height
    batch_size: Any = 1  # cameras per training step
    # steps at which the next height/width/batch_size take over (one fewer than the values);
    # ignored, with a warning, when they are single values
    resolution_milestones: List[int] = field(default_factory=lambda: [])
    eval_height: int = 512  # validation/test render height
    eval_width: int = 512  # validation/test render width
    eval_batch_size: int = 1  # unused: evaluation renders one view per batch
    n_val_views: int = 1  # turntable views rendered at each validation
    n_test_views: int = 120  # turntable views of the test stage (and its video)
    # degrees; per batch uniform in degrees or (half the time) uniform on the sphere
    elevation_range: Tuple[float, float] = (-10, 90)
    azimuth_range: Tuple[float, float] = (-180, 180)  # degrees; 0 looks at the front (+x)
    camera_distance_range: Tuple[float, float] = (1, 1.5)  # distance of the camera from the origin
    fovy_range: Tuple[float, float] = (40, 70)  # vertical field of view, degrees
    camera_perturb: float = 0.1  # uniform noise added to the camera position
    center_perturb: float = 0.2  # std of the noise on the look-at point
    up_perturb: float = 0.02  # std of the noise on the up vector
    light_position_perturb: float = 1.0  # dreamfusion: std of the noise on the light direction
    light_distance_range: Tuple[float, float] = (0.8, 1.5)  # the point light's distance
    eval_elevation_deg: float = 15.0  # turntable elevation, degrees
    eval_camera_distance: float = 1.5  # turntable distance
    eval_fovy_deg: float = 70.0  # turntable vertical field of view
    # test turntable framed on the trained object: 0 keeps eval_camera_distance about the origin;
    # a share in (0, 1] turns about the object's centre, at the distance where its bounding
    # sphere fills that share of the frame height (the object is read from the geometry when
    # the test stage starts; validation views keep the fixed camera)
    eval_fit_object: float = 0.0
    # fill: every object framed as above | contain: the fixed turntable stays while the rendered
    # object stays inside its frame (opacity below 0.5 on the border), and only an object that
    # leaves it is framed on its centre, at the nearest distance that holds it inside that share
    # of every view's frame (the isosurface points inside the render's silhouettes: faint parts
    # the render does not show do not count)
    eval_fit_mode: str = "fill"
    # dreamfusion: light near the camera direction | magic3d: in a cone around the view direction
    light_sample_strategy: str = "dreamfusion"
    batch_uniform_azimuth: bool = True  # one azimuth per equal sector, so each batch sees all sides
    progressive_until: int = (
        0  # grow the elevation/azimuth ranges from their centre until this step
    )
    rays_d_normalize: bool = True  # unit-length ray directions


def _as_list(value) -> List:
    value = config_to_primitive(value)
    return list(value) if isinstance(value, (list, tuple)) else [value]


def spherical_to_cartesian(
    elevation_deg: Float[Tensor, "B"],
    azimuth_deg: Float[Tensor, "B"],
    camera_distances: Float[Tensor, "B"],
) -> Float[Tensor, "B 3"]:
    """Camera positions on spheres around the origin (azimuth 0 on +x, elevation towards +z)."""
    elevation = elevation_deg * math.pi / 180
    azimuth = azimuth_deg * math.pi / 180
    return torch.stack(
        [
            camera_distances * torch.cos(elevation) * torch.cos(azimuth),
            camera_distances * torch.cos(elevation) * torch.sin(azimuth),
            camera_distances * torch.sin(elevation),
        ],
        dim=-1,
    )


def make_camera_batch(
    elevation_deg: Float[Tensor, "B"],
    azimuth_deg: Float[Tensor, "B"],
    camera_distances: Float[Tensor, "B"],
    fovy_deg: Float[Tensor, "B"],
    height: int,
    width: int,
    light_positions: Float[Tensor, "B 3"],
    directions_unit_focal: Optional[Float[Tensor, "H W 3"]] = None,
    center: Optional[Float[Tensor, "B 3"]] = None,
    up: Optional[Float[Tensor, "B 3"]] = None,
    camera_positions: Optional[Float[Tensor, "B 3"]] = None,
    rays_d_normalize: bool = True,
) -> Dict[str, Any]:
    """Everything a renderer and a guidance need for a batch of cameras (see API.md)."""
    if camera_positions is None:  # given positions (perturbed ones) still look at the centre
        camera_positions = spherical_to_cartesian(elevation_deg, azimuth_deg, camera_distances)
    cam_pos, c2w = look_at(camera_positions, center, up)
    fovy = fovy_deg * math.pi / 180
    if directions_unit_focal is None:
        directions_unit_focal = get_ray_directions(H=height, W=width, focal=1.0)
    focal_length = 0.5 * height / torch.tan(0.5 * fovy)
    directions = directions_unit_focal[None, :, :, :].repeat(elevation_deg.shape[0], 1, 1, 1)
    directions[:, :, :, :2] = directions[:, :, :, :2] / focal_length[:, None, None, None]
    rays_o, rays_d = get_rays(directions, c2w, keepdim=True, normalize=rays_d_normalize)
    proj_mtx = get_projection_matrix(fovy, width / height, 0.01, 100.0)
    mvp_mtx = get_mvp_matrix(c2w, proj_mtx)
    return {
        "rays_o": rays_o,
        "rays_d": rays_d,
        "mvp_mtx": mvp_mtx,
        "camera_positions": cam_pos,
        "c2w": c2w,
        "light_positions": light_positions,
        "elevation": elevation_deg,
        "azimuth": azimuth_deg,
        "camera_distances": camera_distances,
        "height": height,
        "width": width,
        "fovy": fovy,
        "proj_mtx": proj_mtx,
    }


def fitted_distance(radius: float, fovy_deg: float, share: float) -> float:
    """The camera distance at which a sphere of ``radius``, looked at through its centre, fills
    ``share`` of the frame height of a camera with vertical field of view ``fovy_deg`` (its
    silhouette is a circle of angular radius asin(radius / distance))."""
    half = math.atan(share * math.tan(0.5 * fovy_deg * math.pi / 180))
    return radius / math.sin(half)


def refit_turntable(
    batch: Dict[str, Any],
    center: Float[Tensor, "3"],
    distance: float,
    rays_d_normalize: bool = True,
) -> None:
    """Moves an evaluation batch's cameras in place: the same elevations, azimuths, field of
    view and image size, looking at ``center`` from ``distance`` (the light at the camera)."""
    elevation, device = batch["elevation"], batch["elevation"].device
    elev, azim = elevation.detach().cpu().float(), batch["azimuth"].detach().cpu().float()
    fovy = torch.as_tensor(batch["fovy"]).detach().cpu().float().reshape(-1).expand_as(elev)
    dist = torch.full_like(elev, float(distance))
    ctr = center.detach().cpu().float().reshape(1, 3).expand(elev.shape[0], 3)
    cam = spherical_to_cartesian(elev, azim, dist) + ctr
    new = make_camera_batch(
        elev,
        azim,
        dist,
        fovy * 180 / math.pi,
        int(batch["height"]),
        int(batch["width"]),
        light_positions=cam,
        center=ctr,
        camera_positions=cam,
        rays_d_normalize=rays_d_normalize,
    )
    for key, value in new.items():
        if key in ("height", "width"):
            continue
        batch[key] = (
            value.to(device=device, dtype=elevation.dtype) if torch.is_tensor(value) else value
        )


def look_at(
    camera_positions: Float[Tensor, "B 3"],
    center: Optional[Float[Tensor, "B 3"]] = None,
    up: Optional[Float[Tensor, "B 3"]] = None,
) -> Tuple[Float[Tensor, "B 3"], Float[Tensor, "B 4 4"]]:
    """OpenGL camera-to-world matrices for cameras at ``camera_positions`` looking at ``center``."""
    B = camera_positions.shape[0]
    if center is None:
        center = torch.zeros_like(camera_positions)
    if up is None:
        up = torch.as_tensor([0, 0, 1], dtype=torch.float32)[None, :].repeat(B, 1)
    lookat = F.normalize(center - camera_positions, dim=-1)
    right = F.normalize(torch.cross(lookat, up, dim=-1), dim=-1)
    up = F.normalize(torch.cross(right, lookat, dim=-1), dim=-1)
    c2w3x4 = torch.cat(
        [torch.stack([right, up, -lookat], dim=-1), camera_positions[:, :, None]], dim=-1
    )
    c2w = torch.cat([c2w3x4, torch.zeros_like(c2w3x4[:, :1])], dim=1)
    c2w[:, 3, 3] = 1.0
    return camera_positions, c2w


class RandomCameraIterableDataset(IterableDataset, Updateable):
    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg: RandomCameraDataModuleConfig = cfg
        self.heights: List[int] = _as_list(self.cfg.height)
        self.widths: List[int] = _as_list(self.cfg.width)
        self.batch_sizes: List[int] = _as_list(self.cfg.batch_size)
        n = max(len(self.heights), len(self.widths), len(self.batch_sizes))
        if any(len(v) not in (1, n) for v in (self.heights, self.widths, self.batch_sizes)):
            raise ConfigError(
                "data: height, width and batch_size, where lists, need the same number of values"
            )
        # a single value holds at every milestone (e.g. data.width=32 over a list of widths)
        self.heights, self.widths, self.batch_sizes = (
            v * n if len(v) == 1 else v for v in (self.heights, self.widths, self.batch_sizes)
        )
        milestones = list(self.cfg.resolution_milestones)
        if n == 1 and milestones:
            # one size throughout (e.g. height/width overridden on a config with milestones)
            threestudio.warn(
                f"data.resolution_milestones {milestones} ignored: height, width and batch_size "
                "do not change"
            )
            milestones = []
        if len(milestones) != n - 1:
            raise ConfigError(
                f"data.resolution_milestones needs {n - 1} step(s) for {n} resolutions, "
                f"got {list(self.cfg.resolution_milestones)}"
            )
        if milestones != sorted(milestones):
            raise ConfigError("data.resolution_milestones must increase")
        self.resolution_milestones = [0] + milestones
        self.directions_unit_focals = [
            get_ray_directions(H=h, W=w, focal=1.0) for h, w in zip(self.heights, self.widths)
        ]
        self.height, self.width = self.heights[0], self.widths[0]
        self.batch_size = self.batch_sizes[0]
        self.directions_unit_focal = self.directions_unit_focals[0]
        self.elevation_range = self.cfg.elevation_range
        self.azimuth_range = self.cfg.azimuth_range
        self.camera_distance_range = self.cfg.camera_distance_range
        self.fovy_range = self.cfg.fovy_range
        # camera draws come from a generator seeded by (seed, step index): Lightning prefetches
        # batches, so a batch must be a function of its step alone for resume to be exact
        self.base_seed = torch.initial_seed() % (2**31)
        self.next_step = 0
        self.generator = torch.Generator()
        if self.cfg.light_sample_strategy not in ("dreamfusion", "magic3d"):
            raise ConfigError(
                f"data.light_sample_strategy: unknown strategy '{self.cfg.light_sample_strategy}' "
                "(use 'dreamfusion' or 'magic3d')"
            )

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False):
        size_ind = bisect.bisect_right(self.resolution_milestones, global_step) - 1
        self.height = self.heights[size_ind]
        self.width = self.widths[size_ind]
        self.batch_size = self.batch_sizes[size_ind]
        self.directions_unit_focal = self.directions_unit_focals[size_ind]
        self.progressive_view(global_step)

    def progressive_view(self, global_step: int) -> None:
        if self.cfg.progressive_until <= 0:
            return
        r = min(1.0, global_step / self.cfg.progressive_until)
        e0, e1 = self.cfg.elevation_range
        a0, a1 = self.cfg.azimuth_range
        ec = self.cfg.eval_elevation_deg
        self.elevation_range = ((1 - r) * ec + r * e0, (1 - r) * ec + r * e1)
        self.azimuth_range = ((1 - r) * 0.0 + r * a0, (1 - r) * 0.0 + r * a1)

    def set_step(self, global_step: int) -> None:
        """The step whose batch the next ``collate`` produces (set on start and on resume)."""
        self.next_step = int(global_step)

    def __iter__(self):
        while True:
            yield {}

    def _rand(self, *shape: int) -> Tensor:
        return torch.rand(*shape, generator=self.generator)

    def _randn(self, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=self.generator)

    def _uniform(self, lo: float, hi: float, n: int) -> Tensor:
        return self._rand(n) * (hi - lo) + lo

    def collate(self, batch) -> Dict[str, Any]:
        step = self.next_step
        self.next_step += 1
        self.update_step(0, step)
        self.generator.manual_seed(self.base_seed * 1_000_003 + step)
        B = self.batch_size
        # elevation: uniform in degrees half the time, uniform on the sphere the other half
        if self._rand(1).item() < 0.5:
            elevation_deg = self._uniform(*self.elevation_range, B)
        else:
            # uniform in area on the sphere: sin(elevation) is uniform
            lo = (math.sin(math.radians(self.elevation_range[0])) + 1.0) / 2.0
            hi = (math.sin(math.radians(self.elevation_range[1])) + 1.0) / 2.0
            elevation_deg = torch.asin(2 * self._uniform(lo, hi, B) - 1.0) * 180 / math.pi
        if self.cfg.batch_uniform_azimuth:
            # one azimuth per equal sector so every batch sees all sides
            a0, a1 = self.azimuth_range
            azimuth_deg = (self._rand(B) + torch.arange(B)) / B * (a1 - a0) + a0
        else:
            azimuth_deg = self._uniform(*self.azimuth_range, B)
        camera_distances = self._uniform(*self.camera_distance_range, B)
        fovy_deg = self._uniform(*self.fovy_range, B)

        camera_positions = spherical_to_cartesian(elevation_deg, azimuth_deg, camera_distances)
        center = torch.zeros_like(camera_positions)
        up = torch.as_tensor([0, 0, 1], dtype=torch.float32)[None, :].repeat(B, 1)
        camera_positions = camera_positions + (self._rand(B, 3) * 2 - 1) * self.cfg.camera_perturb
        center = center + self._randn(B, 3) * self.cfg.center_perturb
        up = up + self._randn(B, 3) * self.cfg.up_perturb

        light_distances = self._uniform(*self.cfg.light_distance_range, B)
        if self.cfg.light_sample_strategy == "dreamfusion":
            # around the camera direction, perturbed
            light_direction = F.normalize(
                camera_positions + self._randn(B, 3) * self.cfg.light_position_perturb, dim=-1
            )
            light_positions = light_direction * light_distances[:, None]
        else:  # magic3d: a random direction in a cone around the camera's view direction
            camera_dir = F.normalize(camera_positions, dim=-1)
            x = F.normalize(
                torch.stack(
                    [camera_dir[:, 1], -camera_dir[:, 0], torch.zeros_like(camera_dir[:, 0])], -1
                ),
                dim=-1,
            )
            y = F.normalize(torch.cross(x, camera_dir, dim=-1), dim=-1)
            rot = torch.stack([x, y, camera_dir], dim=-1)
            light_azimuth = self._rand(B) * math.pi * 2
            light_elevation = self._rand(B) * math.pi / 3 + math.pi / 6
            local = torch.stack(
                [
                    torch.cos(light_elevation) * torch.cos(light_azimuth),
                    torch.cos(light_elevation) * torch.sin(light_azimuth),
                    torch.sin(light_elevation),
                ],
                -1,
            )
            light_positions = (rot @ local[:, :, None])[:, :, 0] * light_distances[:, None]

        return make_camera_batch(
            elevation_deg,
            azimuth_deg,
            camera_distances,
            fovy_deg,
            self.height,
            self.width,
            light_positions,
            directions_unit_focal=self.directions_unit_focal,
            center=center,
            up=up,
            camera_positions=camera_positions,
            rays_d_normalize=self.cfg.rays_d_normalize,
        )


class RandomCameraDataset(Dataset):
    """Fixed evaluation cameras: a turntable at the eval elevation/distance/fovy."""

    def __init__(self, cfg: Any, split: str) -> None:
        super().__init__()
        self.cfg: RandomCameraDataModuleConfig = cfg
        self.split = split
        self.n_views = self.cfg.n_val_views if split == "val" else self.cfg.n_test_views
        azimuth_deg = torch.linspace(-180.0, 180.0, self.n_views + 1)[: self.n_views]
        elevation_deg = torch.full_like(azimuth_deg, self.cfg.eval_elevation_deg)
        camera_distances = torch.full_like(azimuth_deg, self.cfg.eval_camera_distance)
        fovy_deg = torch.full_like(azimuth_deg, self.cfg.eval_fovy_deg)
        cam_pos = spherical_to_cartesian(elevation_deg, azimuth_deg, camera_distances)
        self.batch = make_camera_batch(
            elevation_deg,
            azimuth_deg,
            camera_distances,
            fovy_deg,
            self.cfg.eval_height,
            self.cfg.eval_width,
            light_positions=cam_pos,  # the light sits at the camera in evaluation
            rays_d_normalize=self.cfg.rays_d_normalize,
        )

    def __len__(self) -> int:
        return self.n_views

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = {"index": index}
        for key, value in self.batch.items():
            item[key] = value[index] if isinstance(value, Tensor) and value.ndim > 0 else value
        return item

    def collate(self, batch) -> Dict[str, Any]:
        out = torch.utils.data.default_collate(batch)
        out.update({"height": self.cfg.eval_height, "width": self.cfg.eval_width})
        return out


# sizes a camera config must hold as positive integers (a list: one per resolution milestone)
POSITIVE_SIZES = ("height", "width", "batch_size", "eval_height", "eval_width")
FIT_MODES = ("fill", "contain")


def check_sizes(cfg: Any, prefix: str = "data") -> None:
    """Image sizes and batch sizes are positive integers: a zero or negative one is one line
    naming the key (it would otherwise fail deep in ray generation, or train on nothing)."""
    for key in POSITIVE_SIZES:
        if key not in cfg:
            continue
        value = cfg[key]
        for v in _as_list(value):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{prefix}.{key}: {value} is not a positive integer")
    share = cfg.get("eval_fit_object", 0.0)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ConfigError(
            f"{prefix}.eval_fit_object: {share} is not a share of the frame in [0, 1] "
            "(0 keeps the fixed turntable; 0.9 frames the object in nine tenths of the height)"
        )
    mode = cfg.get("eval_fit_mode", "fill")
    if mode not in FIT_MODES:
        raise ConfigError(
            f"{prefix}.eval_fit_mode: {mode!r} is not one of {', '.join(FIT_MODES)} "
            "(fill frames every object; contain moves the camera only for one that would leave "
            "the frame)"
        )
    for key in ("n_val_views", "n_test_views"):
        if key in cfg and (not isinstance(cfg[key], int) or cfg[key] < 0):
            raise ConfigError(f"{prefix}.{key}: {cfg[key]} is not a non-negative integer")


@threestudio.register("random-camera-datamodule")
class RandomCameraDataModule(pl.LightningDataModule):
    cfg: RandomCameraDataModuleConfig

    def __init__(self, cfg: Optional[Union[dict, Any]] = None) -> None:
        super().__init__()
        self.cfg = parse_structured(self.config_class, cfg)
        check_sizes(self.cfg)

    # subclasses (datamodules that add images to the cameras) swap these
    config_class = RandomCameraDataModuleConfig
    train_dataset_class = RandomCameraIterableDataset
    eval_dataset_class = RandomCameraDataset

    def setup(self, stage=None) -> None:
        if stage in (None, "fit"):
            self.train_dataset = self.train_dataset_class(self.cfg)
        if stage in (None, "fit", "validate"):
            self.val_dataset = self.eval_dataset_class(self.cfg, "val")
        if stage in (None, "test", "predict"):
            self.test_dataset = self.eval_dataset_class(self.cfg, "test")

    def general_loader(self, dataset, batch_size, collate_fn=None) -> DataLoader:
        return DataLoader(
            dataset,
            num_workers=0,
            batch_size=batch_size,
            collate_fn=collate_fn,
            # its own generator: creating an iterator then leaves the global RNG alone, which
            # keeps training randomness identical between straight and resumed runs
            generator=torch.Generator(),
        )

    def train_dataloader(self) -> DataLoader:
        return self.general_loader(
            self.train_dataset, batch_size=None, collate_fn=self.train_dataset.collate
        )

    def val_dataloader(self) -> DataLoader:
        return self.general_loader(
            self.val_dataset, batch_size=1, collate_fn=self.val_dataset.collate
        )

    def test_dataloader(self) -> DataLoader:
        return self.general_loader(
            self.test_dataset, batch_size=1, collate_fn=self.test_dataset.collate
        )

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
