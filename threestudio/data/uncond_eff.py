"""Random cameras that render only part of a higher-resolution image (efficient DreamFusion).

Each training batch describes a ``height`` x ``width`` camera but carries rays for a random
``sample_height`` x ``sample_width`` sub-lattice of its pixels: one row drawn uniformly in each of
``sample_height`` equal bands of rows, one column likewise per band of columns, drawn anew for
every camera of every step. The renderer shades only those rays; ``spread_samples`` puts each
rendered pixel back at its place in the full image and fills every other pixel from the nearest
rendered row and column, and that full image is what the guidance scores. Evaluation renders
whole images, as the plain random-camera datamodule does.

Batch keys added to the random-camera ones: ``sample_height``, ``sample_width``,
``sample_rows [B, sample_height]`` and ``sample_cols [B, sample_width]`` (the full-image rows and
columns rendered, increasing) and ``efficiency_mask [B, height, width]`` (True at rendered
pixels); ``rays_o``/``rays_d`` are ``[B, sample_height, sample_width, 3]``.
"""

import bisect
from dataclasses import dataclass

import torch

import threestudio
from threestudio.data.uncond import (
    RandomCameraDataModule,
    RandomCameraDataModuleConfig,
    RandomCameraIterableDataset,
    _as_list,
)
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Bool, Dict, Float, Int, List, Tensor


@dataclass
class EffRandomCameraDataModuleConfig(RandomCameraDataModuleConfig):
    height: Any = 128  # height of the image the guidance sees (a list: per milestone)
    width: Any = 128  # like height
    # rows rendered per training camera, at most height (a list: per resolution milestone)
    sample_height: Any = 64
    sample_width: Any = 64  # columns rendered per training camera, at most width


def stratified_indices(
    size: int, n: int, batch_size: int, generator: torch.Generator
) -> Int[Tensor, "B n"]:
    """Per batch item, ``n`` increasing indices of ``range(size)``: one drawn uniformly from
    each of the ``n`` bands ``[floor(k size / n), floor((k + 1) size / n))``."""
    edges = torch.arange(n + 1) * size // n
    lo, width = edges[:-1], edges[1:] - edges[:-1]  # every band holds >= 1 index (n <= size)
    offsets = (torch.rand(batch_size, n, generator=generator) * width).long()
    return lo + torch.minimum(offsets, width - 1)


def nearest_sample(indices: Int[Tensor, "B n"], size: int) -> Int[Tensor, "B size"]:
    """For each of ``range(size)``, the position in ``indices`` of the nearest one (the lower
    on a tie)."""
    full = torch.arange(size, device=indices.device)
    return (full[None, :, None] - indices[:, None, :]).abs().argmin(dim=-1)


def spread_samples(
    samples: Float[Tensor, "B h w C"],
    sample_rows: Int[Tensor, "B h"],
    sample_cols: Int[Tensor, "B w"],
    height: int,
    width: int,
) -> Float[Tensor, "B H W C"]:
    """The full image from a render of the sampled sub-lattice: pixel ``(i, j)`` of the render
    lands at ``(sample_rows[i], sample_cols[j])`` and every other pixel copies the rendered
    pixel of the nearest sampled row and column. A gather, so each rendered ray receives the
    gradients of all the pixels that copy it."""
    row_src = nearest_sample(sample_rows, int(height))
    col_src = nearest_sample(sample_cols, int(width))
    b = torch.arange(samples.shape[0], device=samples.device)[:, None, None]
    return samples[b, row_src[:, :, None], col_src[:, None, :]]


class EffRandomCameraIterableDataset(RandomCameraIterableDataset):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        n = len(self.heights)
        sizes = {}
        for key, full in (("sample_height", self.heights), ("sample_width", self.widths)):
            values = _as_list(getattr(cfg, key))
            if len(values) not in (1, n):
                raise ConfigError(
                    f"data.{key}: {len(values)} values for {n} resolutions (give one or {n})"
                )
            values = values * n if len(values) == 1 else values
            for value, limit in zip(values, full):
                if not 1 <= int(value) <= int(limit):
                    name = "height" if key == "sample_height" else "width"
                    raise ConfigError(
                        f"data.{key}={value} must be between 1 and data.{name} ({limit})"
                    )
            sizes[key] = [int(v) for v in values]
        self.sample_heights: List[int] = sizes["sample_height"]
        self.sample_widths: List[int] = sizes["sample_width"]
        self.sample_height: int = self.sample_heights[0]
        self.sample_width: int = self.sample_widths[0]

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False):
        super().update_step(epoch, global_step, on_load_weights)
        size_ind = bisect.bisect_right(self.resolution_milestones, global_step) - 1
        self.sample_height = self.sample_heights[size_ind]
        self.sample_width = self.sample_widths[size_ind]

    def collate(self, batch) -> Dict[str, Any]:
        # the full cameras first; the sub-lattice continues the same per-step random stream,
        # so a batch is still a function of its step alone
        out = super().collate(batch)
        B = out["rays_o"].shape[0]
        rows = stratified_indices(self.height, self.sample_height, B, self.generator)
        cols = stratified_indices(self.width, self.sample_width, B, self.generator)
        b = torch.arange(B)[:, None, None]
        pick = (b, rows[:, :, None], cols[:, None, :])
        mask: Bool[Tensor, "B H W"] = torch.zeros(B, self.height, self.width, dtype=torch.bool)
        mask[pick] = True
        out.update(
            {
                "rays_o": out["rays_o"][pick],
                "rays_d": out["rays_d"][pick],
                "sample_height": self.sample_height,
                "sample_width": self.sample_width,
                "sample_rows": rows,
                "sample_cols": cols,
                "efficiency_mask": mask,
            }
        )
        return out


@threestudio.register("eff-random-camera-datamodule")
class EffRandomCameraDataModule(RandomCameraDataModule):
    cfg: EffRandomCameraDataModuleConfig

    config_class = EffRandomCameraDataModuleConfig
    train_dataset_class = EffRandomCameraIterableDataset
