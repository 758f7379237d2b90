"""Tensor helpers shared by data, renderers and geometry.

Conventions: world axes x back, y right, z up; camera-to-world matrices in the OpenGL convention
(camera looks down its -z axis, +y up).
"""

import math
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.amp import custom_bwd, custom_fwd

from threestudio.utils.typing import Any, Callable, Float, Int, Num, Optional, Tensor, Tuple, Union

ValidScale = Union[Tuple[float, float], Num[Tensor, "2 D"]]


def dot(x, y):
    return torch.sum(x * y, -1, keepdim=True)


def reflect(x, n):
    return 2 * dot(x, n) * n - x


def scale_tensor(
    dat: Num[Tensor, "... D"], inp_scale: ValidScale, tgt_scale: ValidScale
) -> Num[Tensor, "... D"]:
    if inp_scale is None:
        inp_scale = (0, 1)
    if tgt_scale is None:
        tgt_scale = (0, 1)
    if isinstance(tgt_scale, Tensor):
        assert dat.shape[-1] == tgt_scale.shape[-1]
    dat = (dat - inp_scale[0]) / (inp_scale[1] - inp_scale[0])
    dat = dat * (tgt_scale[1] - tgt_scale[0]) + tgt_scale[0]
    return dat


class _TruncExp(torch.autograd.Function):
    # exp with the gradient clamped, for densities (Instant-NGP)
    @staticmethod
    @custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    @custom_bwd(device_type="cuda")
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(torch.clamp(x, max=15))


trunc_exp = _TruncExp.apply


class SpecifyGradient(torch.autograd.Function):
    """Forward returns a dummy 1 (scaled by the AMP grad scaler), backward returns ``gt_grad``."""

    @staticmethod
    @custom_fwd(device_type="cuda")
    def forward(ctx, input_tensor, gt_grad):
        ctx.save_for_backward(gt_grad)
        return torch.ones([1], device=input_tensor.device, dtype=input_tensor.dtype)

    @staticmethod
    @custom_bwd(device_type="cuda")
    def backward(ctx, grad_scale):
        (gt_grad,) = ctx.saved_tensors
        return gt_grad * grad_scale, None


def get_activation(name: Optional[str]) -> Callable:
    if name is None:
        return lambda x: x
    name = name.lower()
    if name in ("none", "identity"):
        return lambda x: x
    if name == "lin2srgb":
        return lambda x: torch.where(
            x > 0.0031308,
            torch.pow(torch.clamp(x, min=0.0031308), 1.0 / 2.4) * 1.055 - 0.055,
            12.92 * x,
        ).clamp(0.0, 1.0)
    if name == "exp":
        return lambda x: torch.exp(x)
    if name == "shifted_exp":
        return lambda x: torch.exp(x - 1.0)
    if name == "trunc_exp":
        return trunc_exp
    if name == "shifted_trunc_exp":
        return lambda x: trunc_exp(x - 1.0)
    if name == "sigmoid":
        return lambda x: torch.sigmoid(x)
    if name == "tanh":
        return lambda x: torch.tanh(x)
    if name == "shifted_softplus":
        return lambda x: F.softplus(x - 1.0)
    if name == "scale_-11_01":
        return lambda x: x * 0.5 + 0.5
    try:
        return getattr(F, name)
    except AttributeError:
        from threestudio.utils.errors import ConfigError

        raise ConfigError(f"unknown activation '{name}'") from None


def chunk_batch(func: Callable, chunk_size: int, *args, **kwargs) -> Any:
    """Run ``func`` over chunks of the leading dimension of the tensor arguments and concatenate
    the outputs (tensors, tuples/lists or dicts of tensors). ``chunk_size <= 0`` runs it whole."""
    if chunk_size <= 0:
        return func(*args, **kwargs)
    B = None
    for arg in list(args) + list(kwargs.values()):
        if isinstance(arg, torch.Tensor):
            B = arg.shape[0]
            break
    assert B is not None, "chunk_batch needs at least one tensor argument to split"
    out = defaultdict(list)
    out_type = None
    for i in range(0, max(1, B), chunk_size):
        out_chunk = func(
            *[arg[i : i + chunk_size] if isinstance(arg, torch.Tensor) else arg for arg in args],
            **{
                k: arg[i : i + chunk_size] if isinstance(arg, torch.Tensor) else arg
                for k, arg in kwargs.items()
            },
        )
        if out_chunk is None:
            continue
        out_type = type(out_chunk)
        if isinstance(out_chunk, torch.Tensor):
            out_chunk = {0: out_chunk}
        elif isinstance(out_chunk, (tuple, list)):
            out_chunk = {i: chunk for i, chunk in enumerate(out_chunk)}
        elif not isinstance(out_chunk, dict):
            raise TypeError(f"chunk_batch: unsupported return type {type(out_chunk)}")
        for k, v in out_chunk.items():
            v = v if torch.is_grad_enabled() else (v.detach() if torch.is_tensor(v) else v)
            out[k].append(v)
    if out_type is None:
        return None
    out_merged = {}
    for k, v in out.items():
        if all(vv is None for vv in v):
            out_merged[k] = None
        elif all(isinstance(vv, torch.Tensor) for vv in v):
            out_merged[k] = torch.cat(v, dim=0)
        else:
            raise TypeError(f"chunk_batch: cannot merge outputs of types {[type(vv) for vv in v]}")
    if out_type is torch.Tensor:
        return out_merged[0]
    if out_type in (tuple, list):
        return out_type([out_merged[i] for i in range(len(out_merged))])
    return out_merged


def get_ray_directions(
    H: int,
    W: int,
    focal: Union[float, Tuple[float, float]],
    principal: Optional[Tuple[float, float]] = None,
    use_pixel_centers: bool = True,
) -> Float[Tensor, "H W 3"]:
    """Camera-space ray directions (OpenGL: x right, y up, looking down -z), unnormalised."""
    pixel_center = 0.5 if use_pixel_centers else 0
    if isinstance(focal, (int, float)):
        fx, fy = focal, focal
        cx, cy = W / 2, H / 2
    else:
        fx, fy = focal
        assert principal is not None
        cx, cy = principal
    i, j = torch.meshgrid(
        torch.arange(W, dtype=torch.float32) + pixel_center,
        torch.arange(H, dtype=torch.float32) + pixel_center,
        indexing="xy",
    )
    directions = torch.stack([(i - cx) / fx, -(j - cy) / fy, -torch.ones_like(i)], -1)
    return directions


def get_rays(
    directions: Float[Tensor, "... 3"],
    c2w: Float[Tensor, "... 4 4"],
    keepdim: bool = False,
    noise_scale: float = 0.0,
    normalize: bool = False,
) -> Tuple[Float[Tensor, "... 3"], Float[Tensor, "... 3"]]:
    """World-space ray origins and directions for camera-space ``directions``.

    ``directions`` [H, W, 3] with ``c2w`` [4, 4] or [B, 4, 4]; or [B, H, W, 3] with [B, 4, 4].
    ``keepdim`` keeps the image dimensions, otherwise rays are flattened."""
    assert directions.shape[-1] == 3
    if directions.ndim == 2:  # (N_rays, 3)
        if c2w.ndim == 2:
            c2w = c2w[None, :, :]
        assert c2w.ndim == 3  # (N_rays, 4, 4) or (1, 4, 4)
        rays_d = (directions[:, None, :] * c2w[:, :3, :3]).sum(-1)
        rays_o = c2w[:, :3, 3].expand(rays_d.shape)
    elif directions.ndim == 3:  # (H, W, 3)
        assert c2w.ndim in [2, 3]
        if c2w.ndim == 2:  # (4, 4)
            rays_d = (directions[:, :, None, :] * c2w[None, None, :3, :3]).sum(-1)
            rays_o = c2w[None, None, :3, 3].expand(rays_d.shape)
        else:  # (B, 4, 4)
            rays_d = (directions[None, :, :, None, :] * c2w[:, None, None, :3, :3]).sum(-1)
            rays_o = c2w[:, None, None, :3, 3].expand(rays_d.shape)
    elif directions.ndim == 4:  # (B, H, W, 3)
        assert c2w.ndim == 3  # (B, 4, 4)
        rays_d = (directions[:, :, :, None, :] * c2w[:, None, None, :3, :3]).sum(-1)
        rays_o = c2w[:, None, None, :3, 3].expand(rays_d.shape)
    else:
        raise ValueError(f"get_rays: unsupported directions shape {tuple(directions.shape)}")

    if noise_scale > 0:  # ray jitter for antialiasing during training
        rays_o = rays_o + torch.randn(3, device=rays_o.device) * noise_scale
        rays_d = rays_d + torch.randn(3, device=rays_d.device) * noise_scale

    if normalize:
        rays_d = F.normalize(rays_d, dim=-1)
    if not keepdim:
        rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    return rays_o, rays_d


def get_projection_matrix(
    fovy: Union[float, Float[Tensor, "B"]], aspect_wh: float, near: float, far: float
) -> Float[Tensor, "*B 4 4"]:
    """OpenGL perspective projection (NDC z in [-1, 1]); the y axis is flipped so image row 0 is
    the top of the view, matching ``get_ray_directions``."""
    if isinstance(fovy, float):
        proj_mtx = torch.zeros(4, 4, dtype=torch.float32)
        proj_mtx[0, 0] = 1.0 / (math.tan(fovy / 2.0) * aspect_wh)
        proj_mtx[1, 1] = -1.0 / math.tan(fovy / 2.0)
        proj_mtx[2, 2] = -(far + near) / (far - near)
        proj_mtx[2, 3] = -2.0 * far * near / (far - near)
        proj_mtx[3, 2] = -1.0
    else:
        batch_size = fovy.shape[0]
        proj_mtx = torch.zeros(batch_size, 4, 4, dtype=torch.float32)
        proj_mtx[:, 0, 0] = 1.0 / (torch.tan(fovy / 2.0) * aspect_wh)
        proj_mtx[:, 1, 1] = -1.0 / torch.tan(fovy / 2.0)
        proj_mtx[:, 2, 2] = -(far + near) / (far - near)
        proj_mtx[:, 2, 3] = -2.0 * far * near / (far - near)
        proj_mtx[:, 3, 2] = -1.0
    return proj_mtx


def get_mvp_matrix(
    c2w: Float[Tensor, "*B 4 4"], proj_mtx: Float[Tensor, "*B 4 4"]
) -> Float[Tensor, "*B 4 4"]:
    """Model-view-projection matrix: projection @ world-to-camera."""
    if c2w.ndim == 2:
        assert proj_mtx.ndim == 2
        w2c = torch.zeros(4, 4).to(c2w)
        w2c[:3, :3] = c2w[:3, :3].permute(1, 0)
        w2c[:3, 3:] = -c2w[:3, :3].permute(1, 0) @ c2w[:3, 3:]
        w2c[3, 3] = 1.0
    else:
        w2c = torch.zeros(c2w.shape[0], 4, 4).to(c2w)
        w2c[:, :3, :3] = c2w[:, :3, :3].permute(0, 2, 1)
        w2c[:, :3, 3:] = -c2w[:, :3, :3].permute(0, 2, 1) @ c2w[:, :3, 3:]
        w2c[:, 3, 3] = 1.0
    return proj_mtx @ w2c


def get_full_projection_matrix(
    c2w: Float[Tensor, "B 4 4"], proj_mtx: Float[Tensor, "B 4 4"]
) -> Float[Tensor, "B 4 4"]:
    return (c2w.unsqueeze(0).bmm(proj_mtx.unsqueeze(0))).squeeze(0)


def get_cam_info_gaussian(c2w, fovx, fovy, znear, zfar):
    """World-to-camera, projection and full transform in the row-vector layout that Gaussian
    splatting rasterizers expect (their cameras use the OpenCV axes: y down, z forward)."""
    c2w = c2w.clone()
    c2w[:3, 1:3] *= -1
    w2c = torch.inverse(c2w)
    world_view_transform = w2c.transpose(0, 1).float()

    tan_half_fovy = math.tan(float(fovy) / 2)
    tan_half_fovx = math.tan(float(fovx) / 2)
    top = tan_half_fovy * znear
    bottom = -top
    right = tan_half_fovx * znear
    left = -right
    P = torch.zeros(4, 4)
    P[0, 0] = 2.0 * znear / (right - left)
    P[1, 1] = 2.0 * znear / (top - bottom)
    P[0, 2] = (right + left) / (right - left)
    P[1, 2] = (top + bottom) / (top - bottom)
    P[3, 2] = 1.0
    P[2, 2] = zfar / (zfar - znear)
    P[2, 3] = -(zfar * znear) / (zfar - znear)
    projection_matrix = P.transpose(0, 1).to(world_view_transform)
    full_proj_transform = (
        world_view_transform.unsqueeze(0).bmm(projection_matrix.unsqueeze(0))
    ).squeeze(0)
    camera_center = world_view_transform.inverse()[3, :3]
    return world_view_transform, full_proj_transform, camera_center


def binary_cross_entropy(input: Tensor, target: Tensor) -> Tensor:
    """BCE computed by hand: F.binary_cross_entropy refuses to run under autocast."""
    return -(target * torch.log(input) + (1 - target) * torch.log(1 - input)).mean()


def tet_sdf_diff(
    vert_sdf: Float[Tensor, "Nv 1"], tet_edges: Int[Tensor, "Ne 2"]
) -> Float[Tensor, ""]:
    sdf_f1x6x2 = vert_sdf[:, 0][tet_edges.reshape(-1)].reshape(-1, 2)
    mask = torch.sign(sdf_f1x6x2[..., 0]) != torch.sign(sdf_f1x6x2[..., 1])
    sdf_f1x6x2 = sdf_f1x6x2[mask]
    return F.binary_cross_entropy_with_logits(
        sdf_f1x6x2[..., 0], (sdf_f1x6x2[..., 1] > 0).float()
    ) + F.binary_cross_entropy_with_logits(sdf_f1x6x2[..., 1], (sdf_f1x6x2[..., 0] > 0).float())


def validate_empty_rays(ray_indices, t_start, t_end):
    """nerfacc returns no samples for rays that miss everything; keep one dummy sample so the
    downstream shapes stay valid."""
    if ray_indices.nelement() == 0:
        ray_indices = torch.LongTensor([0]).to(ray_indices)
        t_start = torch.Tensor([0]).to(t_start)
        t_end = torch.Tensor([0]).to(t_end)
    return ray_indices, t_start, t_end


def perpendicular_component(x: Float[Tensor, "B C H W"], y: Float[Tensor, "B C H W"]):
    """The part of ``x`` perpendicular to ``y``, per batch item (Perp-Neg)."""
    eps = torch.ones_like(x[:, 0, 0, 0]) * 1e-6
    return (
        x
        - (
            torch.mul(x, y).sum(dim=[1, 2, 3])
            / torch.maximum(torch.mul(y, y).sum(dim=[1, 2, 3]), eps)
        ).view(-1, 1, 1, 1)
        * y
    )


def as_size(value: Any, name: str = "size") -> int:
    """An image size (``batch["height"]``/``batch["width"]``) as an int. A dataloader's default
    collate turns an item's int into a tensor of one value per item: those are read out (all
    items must agree); ints and numpy integers pass."""
    if torch.is_tensor(value) or hasattr(value, "__array__"):
        values = torch.as_tensor(value).reshape(-1)
        if values.numel() == 0 or not bool((values == values[0]).all()):
            raise ValueError(f"{name} must be one value for the whole batch, got {value}")
        return int(values[0])
    if isinstance(value, (list, tuple)):
        return as_size(torch.as_tensor(value), name)
    return int(value)


def as_resolution(height: Any, width: Any) -> Tuple[int, int]:
    """``(as_size(height), as_size(width))``."""
    return as_size(height, "height"), as_size(width, "width")
