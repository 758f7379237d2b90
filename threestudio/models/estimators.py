"""The established import path of the sample estimators; they live in
``threestudio.kernels.ray_marching`` (nerfacc's CUDA kernels or pure PyTorch)."""

from threestudio.kernels.ray_marching import (  # noqa: F401 - re-exported
    ImportanceEstimator,
    OccGridEstimator,
    accumulate_along_rays,
    invert_cdf,
    packed_exclusive_sum,
    ray_aabb_intersect,
    render_weight_from_alpha,
    render_weight_from_density,
    use_nerfacc_kernels,
)
