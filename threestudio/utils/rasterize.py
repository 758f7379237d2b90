"""The established import path of the rasteriser; it lives in ``threestudio.kernels.rasterizer``
(nvdiffrast or pure PyTorch)."""

from threestudio.kernels.rasterizer import (  # noqa: F401 - re-exported
    NVDiffRasterizerContext,
    torch_antialias,
    torch_interpolate,
    torch_rasterize,
)
