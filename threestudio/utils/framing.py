"""Where a trained object is, for framing the test turntable on it
(``data.eval_fit_object``)."""

from typing import Optional, Tuple

import torch

import threestudio
from threestudio.utils.errors import UserError
from threestudio.utils.typing import Float, Tensor


def object_bounds(geometry) -> Optional[Tuple[Float[Tensor, "3"], float]]:
    """The centre of the object's bounding box and the radius of the sphere about it holding
    every vertex of its isosurface (components smaller than the geometry's outlier threshold
    dropped, as an export drops them), or None for a geometry without one (a warning)."""
    if not hasattr(geometry, "isosurface"):
        threestudio.warn(
            f"data.eval_fit_object: {type(geometry).__name__} has no isosurface to frame; "
            "the test views keep data.eval_camera_distance"
        )
        return None
    try:
        with torch.no_grad():
            v_pos = geometry.isosurface().v_pos.detach().float()
    except UserError as e:  # an empty surface: nothing to frame
        threestudio.warn(f"data.eval_fit_object: {e}; the test views keep the fixed camera")
        return None
    lo, hi = v_pos.amin(dim=0), v_pos.amax(dim=0)
    center = (lo + hi) / 2
    radius = float((v_pos - center).norm(dim=-1).max())
    return center, radius
