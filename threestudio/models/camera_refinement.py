"""Per-image camera refinement: a learned pose correction for each dataset view.

A reference photo's camera is rarely exact (the elevation of a casual photo is a guess, a
multi-view capture's poses come from structure-from-motion). Each image ``i`` gets a small
correction ``D_i = [exp([w_i]x) | v_i]`` (an axis-angle rotation ``w_i`` in radians and a
translation ``v_i`` in scene units, both in the camera's own axes, as nerfstudio's SO3xR3
camera optimiser) applied on the right of its camera-to-world matrix,
``c2w' = c2w @ D_i``: the camera turns about its own centre and moves along its own axes.
Deltas start at zero (the given poses) and are optimised with the scene.

``refine_batch`` rewrites a camera batch for the corrected poses: ``c2w``, ``rays_o``,
``rays_d``, ``mvp_mtx`` and ``camera_positions``. The rays are moved by the rigid map from the
old camera to the new one rather than rebuilt from intrinsics, so any batch works whatever its
intrinsics (``fovy``, focal lengths, a principal point) and whatever was done to its rays
(jitter, normalisation) is kept. ``light_positions`` and the spherical angles
(``elevation``, ``azimuth``, ``camera_distances``) are left as they are: they describe the
nominal camera that guidance conditioning refers to."""

from dataclasses import dataclass

import torch
import torch.nn as nn

import threestudio
from threestudio.utils.base import BaseModule
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Dict, Float, Int, Tensor


def skew(w: Float[Tensor, "*B 3"]) -> Float[Tensor, "*B 3 3"]:
    """The cross-product matrix ``[w]x`` (``[w]x @ u == w x u``)."""
    zero = torch.zeros_like(w[..., 0])
    x, y, z = w.unbind(-1)
    return torch.stack(
        [
            torch.stack([zero, -z, y], -1),
            torch.stack([z, zero, -x], -1),
            torch.stack([-y, x, zero], -1),
        ],
        -2,
    )


def axis_angle_to_matrix(w: Float[Tensor, "*B 3"]) -> Float[Tensor, "*B 3 3"]:
    """The rotation by ``|w|`` radians about ``w``: ``exp([w]x)``. The matrix exponential is
    smooth at ``w = 0``, where deltas start (Rodrigues' formula divides by ``|w|`` there)."""
    return torch.linalg.matrix_exp(skew(w))


def to_homogeneous(pose: Float[Tensor, "B R 4"]) -> Float[Tensor, "B 4 4"]:
    """A [B, 3, 4] pose with the row [0, 0, 0, 1] added; [B, 4, 4] poses pass unchanged."""
    if pose.shape[-2] == 4:
        return pose
    bottom = torch.zeros_like(pose[:, :1, :])
    bottom[..., 3] = 1.0
    return torch.cat([pose, bottom], dim=-2)


def invert_rigid(pose: Float[Tensor, "B 4 4"]) -> Float[Tensor, "B 4 4"]:
    """The inverse of a rotation + translation: ``[R^T | -R^T t]``."""
    rot_t = pose[:, :3, :3].transpose(1, 2)
    top = torch.cat([rot_t, -rot_t @ pose[:, :3, 3:]], dim=-1)
    return torch.cat([top, pose[:, 3:, :]], dim=-2)


@threestudio.register("camera-refinement")
class CameraRefinement(BaseModule):
    """One learned pose delta per dataset image (see the module docstring). Systems build it
    from ``system.camera_refinement`` when ``enabled`` and give its parameters their own
    optimiser group (``name: camera_refinement``, learning rate ``lr``)."""

    @dataclass
    class Config(BaseModule.Config):
        # learn a pose correction for each dataset view (the reference image, or each image
        # of a multi-view capture); off: the given poses are used as they are
        enabled: bool = False
        # the number of images with a delta: batch `index` must lie in [0, n_images) (a
        # single-image batch has no index and is image 0)
        n_images: int = 1
        # learning rate of the deltas' optimiser group (radians / scene units per unit step);
        # the group takes the system optimiser's other settings, without weight decay
        lr: float = 1.0e-3

    cfg: Config

    def configure(self) -> None:
        if self.cfg.n_images < 1:
            raise ConfigError(
                f"system.camera_refinement.n_images must be at least 1, got {self.cfg.n_images}"
            )
        if self.cfg.lr <= 0:
            raise ConfigError(f"system.camera_refinement.lr must be positive, got {self.cfg.lr}")
        # [w (axis-angle, radians), v (translation)] per image, in camera axes
        self.rotation = nn.Parameter(torch.zeros(self.cfg.n_images, 3))
        self.translation = nn.Parameter(torch.zeros(self.cfg.n_images, 3))

    def deltas(self, index: Int[Tensor, "B"]) -> Float[Tensor, "B 4 4"]:
        """The correction ``D_i`` of each image in ``index``."""
        index = index.long().to(self.rotation.device)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.cfg.n_images):
            raise ConfigError(
                f"system.camera_refinement.n_images={self.cfg.n_images} but the batch has image "
                f"index {int(index.max()) if int(index.max()) >= 0 else int(index.min())} "
                "(set n_images to the number of dataset images)"
            )
        rot = axis_angle_to_matrix(self.rotation[index])
        top = torch.cat([rot, self.translation[index][..., None]], dim=-1)
        bottom = torch.zeros_like(top[:, :1, :])
        bottom[..., 3] = 1.0
        return torch.cat([top, bottom], dim=-2)

    def refine_c2w(
        self, c2w: Float[Tensor, "B R 4"], index: Int[Tensor, "B"]
    ) -> Float[Tensor, "B 4 4"]:
        """``c2w @ D_i`` for each pose (3x4 or 4x4) and its image index."""
        return to_homogeneous(c2w) @ self.deltas(index).to(c2w)

    @staticmethod
    def batch_index(batch: Dict[str, Any]) -> Int[Tensor, "B"]:
        """The batch's image indices: ``index`` ([B] or a number), else 0 for every view."""
        n = batch["c2w"].shape[0]
        device = batch["c2w"].device
        index = batch.get("index")
        if index is None:
            return torch.zeros(n, dtype=torch.long, device=device)
        index = torch.as_tensor(index, device=device).long().reshape(-1)
        return index.expand(n) if index.numel() == 1 else index

    def refine_batch(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """The camera batch with every pose corrected: a new dict (the given one and its
        tensors are left alone) whose ``c2w``, ``rays_o``, ``rays_d``, ``mvp_mtx`` and
        ``camera_positions`` (those present) follow the corrected poses, differentiably in the
        deltas."""
        if "c2w" not in batch:
            raise ConfigError(
                "system.camera_refinement.enabled needs camera batches with c2w (the dataset "
                "views' camera-to-world matrices)"
            )
        c2w_in = batch["c2w"]
        # at least float32 even under mixed precision: ray origins need the precision
        dtype = torch.promote_types(c2w_in.dtype, torch.float32)
        with torch.autocast(device_type=c2w_in.device.type, enabled=False):
            c2w = to_homogeneous(c2w_in.to(dtype))
            new_c2w = self.refine_c2w(c2w, self.batch_index(batch))
            # the rigid map taking the given camera to the corrected one (world frame)
            moved = new_c2w @ invert_rigid(c2w)
            rot, shift = moved[:, :3, :3], moved[:, :3, 3]
            out = dict(batch)
            out["c2w"] = new_c2w[:, : c2w_in.shape[1]].to(c2w_in.dtype)
            if "camera_positions" in batch:
                out["camera_positions"] = new_c2w[:, :3, 3].to(batch["camera_positions"].dtype)
            if "rays_d" in batch:
                rays_d = batch["rays_d"]
                out["rays_d"] = torch.einsum("bij,b...j->b...i", rot, rays_d.to(dtype)).to(
                    rays_d.dtype
                )
            if "rays_o" in batch:
                rays_o = batch["rays_o"]
                moved_o = torch.einsum("bij,b...j->b...i", rot, rays_o.to(dtype))
                shape = (rot.shape[0],) + (1,) * (rays_o.dim() - 2) + (3,)
                out["rays_o"] = (moved_o + shift.view(shape)).to(rays_o.dtype)
            if "mvp_mtx" in batch:
                # a world point seen by the corrected camera as the given one saw moved^-1 x
                mvp = batch["mvp_mtx"]
                out["mvp_mtx"] = (mvp.to(dtype) @ invert_rigid(moved)).to(mvp.dtype)
        return out

    def forward(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return self.refine_batch(batch)
