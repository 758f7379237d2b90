"""What the scripts that build the bundled models share: the cached renders of the world, sample
grids and folder sizes for the model cards."""

import os

import torch

from threestudio.bundled.shapes import ShapeDataset, render_shape_dataset
from threestudio.utils.atomic import atomic_path
from threestudio.utils.typing import Float, Optional, Tensor


def rendered(
    work_dir: str,
    name: str,
    n: int,
    size: int,
    seed: int,
    camera_config: Optional[dict] = None,
    tag: str = "",
) -> ShapeDataset:
    """``render_shape_dataset(n, size, size, seed, camera_config=...)``, cached in ``work_dir``
    (``tag`` names a camera set other than the world's)."""
    path = os.path.join(work_dir, f"{name}{tag}_{n}x30_{size}px_seed{seed}.pt")
    if os.path.exists(path):
        data = ShapeDataset.load(path)
        if data.group_idx is not None:  # caches from before the cameras were kept are redone
            return data
    data = render_shape_dataset(n, size, size, seed=seed, camera_config=camera_config)
    os.makedirs(work_dir, exist_ok=True)
    with atomic_path(path) as tmp:
        data.save(tmp)
    return data


def save_grid(images: Float[Tensor, "N H W 3"], rows: int, path: str, scale: int = 2) -> None:
    """``images`` in [0, 1] as a PNG grid of ``rows`` rows, each pixel ``scale`` x ``scale``."""
    import imageio.v2 as imageio

    n, h, w, _ = images.shape
    cols = n // rows
    grid = images[: rows * cols].reshape(rows, cols, h, w, 3).permute(0, 2, 1, 3, 4)
    grid = grid.reshape(rows * h, cols * w, 3)
    grid = grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    imageio.imwrite(path, (grid * 255).round().to(torch.uint8).numpy())


def folder_size_mb(folder: str) -> float:
    total = 0
    for root, _, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 2**20
