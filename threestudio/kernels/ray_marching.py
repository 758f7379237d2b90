"""Sample estimators and packed volume-rendering helpers for the volume renderers.

Samples are *packed*: one flat list of intervals ``[t_starts, t_ends]`` sorted by ray, with
``ray_indices`` naming each sample's ray (nerfacc's layout). Two backends give the same results:

- nerfacc's CUDA kernels, used when the tensors are on CUDA and nerfacc's extension loads;
- pure PyTorch, used everywhere else (nerfacc 0.5.3 cannot march or composite packed samples on
  the CPU).

``use_nerfacc_kernels`` is the single place where that choice is made.
"""

import functools

import torch
import torch.nn as nn

from threestudio.kernels.backend import report_fallback
from threestudio.utils.typing import Callable, Float, Int, List, Literal, Optional, Tensor, Tuple

_FORCE_TORCH_BACKEND = False  # tests set this to compare the two backends on CUDA


@functools.cache
def _nerfacc_cuda_loads() -> bool:
    try:
        if not torch.cuda.is_available():
            return False
        from nerfacc.cuda._backend import _C  # compiles or loads the extension

        return _C is not None
    except Exception:
        return False


def use_nerfacc_kernels(tensor: Tensor) -> bool:
    """True when ``tensor`` lives on CUDA and nerfacc's CUDA extension is usable."""
    if _FORCE_TORCH_BACKEND or not tensor.is_cuda:
        return False
    if not _nerfacc_cuda_loads():
        report_fallback(
            "ray marching", "nerfacc's CUDA kernels", "nerfacc's CUDA extension does not load"
        )
        return False
    return True


# --------------------------------------------------------------------------- ray geometry


def ray_aabb_intersect(
    rays_o: Float[Tensor, "Nr 3"], rays_d: Float[Tensor, "Nr 3"], aabb: Float[Tensor, "6"]
) -> Tuple[Float[Tensor, "Nr"], Float[Tensor, "Nr"], torch.Tensor]:
    """Entry and exit distances of rays through an axis-aligned box (slab method), and whether
    the ray hits it at all (in front of the origin)."""
    inv_d = 1.0 / torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t0 = (aabb[:3] - rays_o) * inv_d
    t1 = (aabb[3:] - rays_o) * inv_d
    t_near = torch.minimum(t0, t1).amax(dim=-1)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    hit = (t_far > t_near) & (t_far > 0)
    return t_near, t_far, hit


# --------------------------------------------------------------------------- packed ops


def _ray_start_offsets(ray_indices: Int[Tensor, "Ns"], n_rays: int) -> Int[Tensor, "Ns"]:
    """For each sample, the position of its ray's first sample in the packed list."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    starts = torch.cumsum(counts, 0) - counts
    return starts[ray_indices]


def packed_exclusive_sum(values: Float[Tensor, "Ns"], ray_indices: Int[Tensor, "Ns"], n_rays: int):
    """Sum of the preceding samples of the same ray, for samples sorted by ray: one global cumsum
    (in float64, so long lists keep their precision) minus each ray's offset; no loop over rays."""
    if values.numel() == 0:
        return values
    inclusive = torch.cumsum(values.double(), 0)
    exclusive = inclusive - values.double()
    first = _ray_start_offsets(ray_indices, n_rays)
    return (exclusive - exclusive[first]).to(values.dtype)


def render_weight_from_density(
    t_starts: Float[Tensor, "Ns"],
    t_ends: Float[Tensor, "Ns"],
    sigmas: Float[Tensor, "Ns"],
    ray_indices: Int[Tensor, "Ns"],
    n_rays: int,
) -> Tuple[Float[Tensor, "Ns"], Float[Tensor, "Ns"], Float[Tensor, "Ns"]]:
    """Weights ``T_i (1 - exp(-sigma_i dt_i))``, transmittances ``T_i`` and alphas of packed
    samples."""
    if use_nerfacc_kernels(sigmas):
        import nerfacc

        return nerfacc.render_weight_from_density(
            t_starts, t_ends, sigmas, ray_indices=ray_indices, n_rays=n_rays
        )
    sigma_dt = sigmas * (t_ends - t_starts)
    alphas = 1.0 - torch.exp(-sigma_dt)
    trans = torch.exp(-packed_exclusive_sum(sigma_dt, ray_indices, n_rays))
    return trans * alphas, trans, alphas


def render_weight_from_alpha(
    alphas: Float[Tensor, "Ns"], ray_indices: Int[Tensor, "Ns"], n_rays: int
) -> Tuple[Float[Tensor, "Ns"], Float[Tensor, "Ns"]]:
    """Weights ``T_i alpha_i`` and transmittances ``T_i = prod_{j<i} (1 - alpha_j)``."""
    if use_nerfacc_kernels(alphas):
        import nerfacc

        return nerfacc.render_weight_from_alpha(alphas, ray_indices=ray_indices, n_rays=n_rays)
    # the product becomes a sum of logs; clamping keeps a fully opaque sample finite
    neg_log = -torch.log1p(-alphas.clamp(max=1.0 - 1e-7))
    trans = torch.exp(-packed_exclusive_sum(neg_log, ray_indices, n_rays))
    return trans * alphas, trans


def accumulate_along_rays(
    weights: Float[Tensor, "Ns"],
    values: Optional[Float[Tensor, "Ns C"]],
    ray_indices: Int[Tensor, "Ns"],
    n_rays: int,
) -> Float[Tensor, "Nr C"]:
    """Per-ray sums of ``weights * values`` (or of the weights when ``values`` is None)."""
    src = weights[:, None] if values is None else weights[:, None] * values
    out = torch.zeros(n_rays, src.shape[-1], dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices, src)


# --------------------------------------------------------------------------- occupancy grid


class OccGridEstimator(nn.Module):
    """A binary occupancy grid over the scene box, updated from the field with an EMA (the scheme
    of Instant-NGP / nerfacc), that marches rays with a fixed step and skips empty cells.

    Buffers ``occs`` and ``binaries`` use nerfacc's names and layout (cell ``x*R*R + y*R + z``),
    so checkpoints written with nerfacc's estimator load unchanged and resume exactly."""

    def __init__(self, roi_aabb: Float[Tensor, "6"], resolution: int = 32) -> None:
        super().__init__()
        self.res = int(resolution)
        self.cells = self.res**3
        self.register_buffer("aabb", torch.as_tensor(roi_aabb, dtype=torch.float32).view(6))
        self.register_buffer("occs", torch.zeros(self.cells))
        self.register_buffer("binaries", torch.zeros(1, self.res, self.res, self.res, dtype=bool))
        r = torch.arange(self.res)
        grid = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).view(-1, 3)
        self.register_buffer("grid_coords", grid, persistent=False)
        self._nerfacc = None  # nerfacc's estimator sharing these buffers, built on first CUDA use

    def fill(self, occupied: bool = True) -> None:
        self.occs.fill_(1.0 if occupied else 0.0)
        self.binaries.fill_(occupied)

    # ---- update

    @torch.no_grad()
    def update_every_n_steps(
        self,
        step: int,
        occ_eval_fn: Callable[[Float[Tensor, "N 3"]], Float[Tensor, "N 1"]],
        occ_thre: float = 0.01,
        ema_decay: float = 0.95,
        warmup_steps: int = 256,
        n: int = 16,
    ) -> None:
        """Every ``n`` steps, nerfacc's update (``OccGridEstimator._update``, same random draws):
        re-evaluate the occupancy at one jittered point per chosen cell, decay the old value by
        ``ema_decay`` and keep the larger; a cell is occupied above ``min(mean occupancy,
        occ_thre)``."""
        if step % n != 0:
            return
        indices = self._cells_to_update(step, warmup_steps)
        coords = self.grid_coords[indices].float()
        x = (coords + torch.rand_like(coords)) / self.res  # one uniform point inside each cell
        x = self.aabb[:3] + x * (self.aabb[3:] - self.aabb[:3])
        occ = occ_eval_fn(x).reshape(-1).float()
        self.occs[indices] = torch.maximum(self.occs[indices] * ema_decay, occ)
        thre = torch.clamp(self.occs[self.occs >= 0].mean(), max=occ_thre)
        self.binaries.copy_((self.occs > thre).view(self.binaries.shape))

    def _cells_to_update(self, step: int, warmup_steps: int) -> Int[Tensor, "N"]:
        """All cells during warm-up; then a quarter of the cells drawn uniformly plus as many
        drawn from the occupied ones (``binaries``, the thresholded grid: under a softplus
        density nearly every cell has ``occs > 0``). Cells marked invisible (``occs < 0``) are
        never re-evaluated."""
        device = self.occs.device
        if step < warmup_steps:
            return torch.arange(self.cells, device=device)[self.occs >= 0]
        n_pick = self.cells // 4
        uniform = torch.randint(self.cells, (n_pick,), device=device)
        uniform = uniform[self.occs[uniform] >= 0]
        occupied = torch.nonzero(self.binaries.view(-1))[:, 0]
        if occupied.numel() > n_pick:
            occupied = occupied[torch.randint(occupied.numel(), (n_pick,), device=device)]
        return torch.cat([uniform, occupied])

    # ---- sampling

    def occupied_at(self, x: Float[Tensor, "N 3"]) -> torch.Tensor:
        u = (x - self.aabb[:3]) / (self.aabb[3:] - self.aabb[:3])
        inside = ((u >= 0) & (u <= 1)).all(-1)
        idx = (u * self.res).long().clamp(0, self.res - 1)
        return self.binaries[0, idx[:, 0], idx[:, 1], idx[:, 2]] & inside

    def _occupied_flat(self, x: Float[Tensor, "N 3"]) -> torch.Tensor:
        """Occupancy of points known to lie in the box (no bounds test)."""
        u = (x - self.aabb[:3]) * (self.res / (self.aabb[3:] - self.aabb[:3]))
        idx = u.to(torch.int32).clamp_(0, self.res - 1)
        flat = (idx[:, 0] * self.res + idx[:, 1]) * self.res + idx[:, 2]
        return self.binaries.view(-1)[flat.long()]

    def _occupied_box(self) -> Optional[Float[Tensor, "6"]]:
        """The world-space box around all occupied cells, or None when no cell is occupied."""
        cells = torch.nonzero(self.binaries[0])
        if cells.numel() == 0:
            return None
        size = (self.aabb[3:] - self.aabb[:3]) / self.res
        lo = self.aabb[:3] + cells.amin(0) * size
        hi = self.aabb[:3] + (cells.amax(0) + 1) * size
        return torch.cat([lo, hi])

    @torch.no_grad()
    def sampling(
        self,
        rays_o: Float[Tensor, "Nr 3"],
        rays_d: Float[Tensor, "Nr 3"],
        sigma_fn: Optional[Callable] = None,
        alpha_fn: Optional[Callable] = None,
        near_plane: float = 0.0,
        far_plane: float = 1e10,
        render_step_size: float = 1e-3,
        early_stop_eps: float = 1e-4,
        alpha_thre: float = 0.0,
        stratified: bool = False,
    ) -> Tuple[Int[Tensor, "Ns"], Float[Tensor, "Ns"], Float[Tensor, "Ns"]]:
        """Packed samples ``(ray_indices, t_starts, t_ends)`` of nerfacc's ``sampling``: intervals
        ``[near + k * step, near + (k + 1) * step]`` (``near`` jittered by up to one step when
        ``stratified``) whose midpoint lies in the scene box and in an occupied cell. With
        ``sigma_fn``/``alpha_fn`` also drop samples whose transmittance fell below
        ``early_stop_eps`` or whose alpha is below ``min(alpha_thre, occs.mean())``."""
        if use_nerfacc_kernels(rays_o):
            return self._nerfacc_estimator().sampling(
                rays_o,
                rays_d,
                sigma_fn=sigma_fn,
                alpha_fn=alpha_fn,
                near_plane=near_plane,
                far_plane=far_plane,
                render_step_size=render_step_size,
                early_stop_eps=early_stop_eps,
                alpha_thre=alpha_thre,
                stratified=stratified,
                cone_angle=0.0,
            )
        return self._sampling_torch(
            rays_o,
            rays_d,
            sigma_fn,
            alpha_fn,
            near_plane,
            far_plane,
            render_step_size,
            early_stop_eps,
            alpha_thre,
            stratified,
        )

    def _nerfacc_estimator(self):
        import nerfacc

        if self._nerfacc is None:
            est = nerfacc.OccGridEstimator(roi_aabb=self.aabb.cpu(), resolution=self.res, levels=1)
            self._nerfacc = [est.to(self.aabb.device)]  # a list keeps it out of the state dict
        est = self._nerfacc[0].to(self.aabb.device)
        self._nerfacc[0] = est
        est.occs = self.occs  # share the live grid
        est.binaries = self.binaries
        return est

    def _sampling_torch(
        self,
        rays_o,
        rays_d,
        sigma_fn,
        alpha_fn,
        near_plane,
        far_plane,
        step,
        early_stop_eps,
        alpha_thre,
        stratified,
    ):
        device = rays_o.device
        n_rays = rays_o.shape[0]
        empty = torch.zeros(0, device=device)
        # nerfacc marches every ray on the lattice near + k * step from its (jittered) near
        # plane; the jitter is drawn first, as nerfacc does, even when nothing is occupied
        near = torch.full((n_rays,), float(near_plane), dtype=rays_o.dtype, device=device)
        if stratified:
            near = near + torch.rand_like(near) * step
        occupied_box = self._occupied_box()
        if occupied_box is None or n_rays == 0:
            return empty.long(), empty, empty
        t_near, t_far, hit = ray_aabb_intersect(rays_o, rays_d, self.aabb)
        t_min = torch.maximum(t_near, near)
        t_max = t_far.clamp(max=far_plane)
        # only where the ray crosses the box around the occupied cells can a midpoint be occupied
        o_near, o_far, o_hit = ray_aabb_intersect(rays_o, rays_d, occupied_box)
        lo, hi = torch.maximum(o_near, t_min), torch.minimum(o_far, t_max)
        hit = hit & o_hit & (hi > lo)
        # k whose midpoint near + (k + 0.5) * step lies in [lo, hi), one wider on each side
        # (rounding); the exact test on the midpoints follows
        k_first = torch.floor((lo - near) / step - 0.5)
        k_last = torch.ceil((hi - near) / step - 0.5)
        k_first = torch.where(hit, k_first, torch.zeros_like(k_first))
        k_last = torch.where(hit, k_last, k_first - 1)
        n_steps = int((k_last - k_first).max().item()) + 1
        if n_steps <= 0:
            return empty.long(), empty, empty
        k = k_first[:, None] + torch.arange(n_steps, device=device, dtype=rays_o.dtype)
        t_starts = near[:, None] + k * step
        t_mid = t_starts + 0.5 * step
        valid = (k <= k_last[:, None]) & (t_mid >= t_min[:, None]) & (t_mid < t_max[:, None])
        valid &= hit[:, None]
        ray_ids, sample_ids = torch.nonzero(valid, as_tuple=True)
        ts = t_starts[ray_ids, sample_ids]
        x = rays_o[ray_ids] + rays_d[ray_ids] * (ts + 0.5 * step)[:, None]
        keep = self._occupied_flat(x)
        ray_ids, ts = ray_ids[keep], ts[keep]
        te = ts + step

        if (alpha_thre > 0.0 or early_stop_eps > 0.0) and (
            sigma_fn is not None or alpha_fn is not None
        ):
            # as nerfacc: a threshold above the mean occupancy would empty a faint scene
            alpha_thre = min(alpha_thre, self.occs.mean().item())
            if sigma_fn is not None:
                if ray_ids.numel() > 0:
                    sigmas = sigma_fn(ts, te, ray_ids).reshape(-1)
                else:
                    sigmas = empty
                sigma_dt = sigmas * (te - ts)
                alphas = 1.0 - torch.exp(-sigma_dt)
                trans = torch.exp(-packed_exclusive_sum(sigma_dt, ray_ids, n_rays))
            else:
                alphas = alpha_fn(ts, te, ray_ids).reshape(-1) if ray_ids.numel() > 0 else empty
                neg_log = -torch.log1p(-alphas.clamp(max=1.0 - 1e-7))
                trans = torch.exp(-packed_exclusive_sum(neg_log, ray_ids, n_rays))
            keep = trans >= early_stop_eps
            if alpha_thre > 0:
                keep &= alphas >= alpha_thre
            ray_ids, ts, te = ray_ids[keep], ts[keep], te[keep]
        return ray_ids, ts, te


# --------------------------------------------------------------------------- importance


def _s_to_t(sampling_type: str, s: Tensor, t_min: Tensor, t_max: Tensor) -> Float[Tensor, "Nr S"]:
    """Map normalised ray coordinates ``s`` in [0, 1] to distances in [t_min, t_max]."""
    if sampling_type == "uniform":
        return t_min + s * (t_max - t_min)
    if sampling_type == "lindisp":  # uniform in inverse depth
        return 1.0 / (s / t_max + (1.0 - s) / t_min)
    raise ValueError(f"unknown sampling_type '{sampling_type}' (use 'uniform' or 'lindisp')")


def invert_cdf(
    s_bins: Float[Tensor, "Nr M"], cdf: Float[Tensor, "Nr M"], u: Float[Tensor, "Nr n"]
) -> Float[Tensor, "Nr n"]:
    """Inverse transform of a piecewise-linear CDF given at ``s_bins`` (normalised to end at 1)."""
    cdf = cdf / cdf[:, -1:].clamp(min=1e-10)
    idx = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True)
    lo = (idx - 1).clamp(0, cdf.shape[-1] - 1)
    hi = idx.clamp(0, cdf.shape[-1] - 1)
    c_lo, c_hi = cdf.gather(1, lo), cdf.gather(1, hi)
    s_lo, s_hi = s_bins.gather(1, lo), s_bins.gather(1, hi)
    frac = ((u - c_lo) / (c_hi - c_lo).clamp(min=1e-10)).clamp(0, 1)
    return s_lo + frac * (s_hi - s_lo)


def _cdf_levels(n_rays: int, n: int, edges: bool, stratified: bool, device) -> Tensor:
    """Quantiles to draw: ``n + 1`` interval edges from 0 to 1, or ``n`` bin midpoints; with
    ``stratified`` each interior one is jittered within its bin (so they stay sorted)."""
    if edges:
        u = torch.linspace(0.0, 1.0, n + 1, device=device).expand(n_rays, n + 1).clone()
        if stratified:
            u[:, 1:-1] += (torch.rand_like(u[:, 1:-1]) - 0.5) / n
        return u
    u = ((torch.arange(n, device=device) + 0.5) / n).expand(n_rays, n).clone()
    if stratified:
        u += (torch.rand_like(u) - 0.5) / n
    return u


class ImportanceEstimator(nn.Module):
    """Hierarchical sampling: a coarse pass per ``prop_sigma_fns`` entry gives each ray a density
    CDF, the final samples are drawn from it and merged with the coarse ones (pure PyTorch)."""

    def __init__(self) -> None:
        super().__init__()
        # follows the module across .to(device): where samples go when near/far are numbers
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @torch.no_grad()
    def sampling(
        self,
        prop_sigma_fns: List[Callable],
        prop_samples: List[int],
        num_samples: int,
        n_rays: int,
        near_plane,
        far_plane,
        sampling_type: Literal["uniform", "lindisp"] = "uniform",
        stratified: bool = False,
        requires_grad: bool = False,
    ) -> Tuple[Float[Tensor, "Nr S"], Float[Tensor, "Nr S"]]:
        """``prop_sigma_fns[i](t_starts [Nr, n], t_ends [Nr, n]) -> densities [Nr, n]``;
        ``near_plane``/``far_plane``: numbers or per-ray tensors [Nr, 1]. Returns sorted
        ``t_starts, t_ends`` of shape [Nr, prop_samples[-1] + num_samples]."""
        assert len(prop_sigma_fns) == len(prop_samples), "one sample count per proposal function"
        device = self.device
        for bound in (near_plane, far_plane):
            if torch.is_tensor(bound):
                device = bound.device
        t_min = torch.as_tensor(near_plane, dtype=torch.float32, device=device).expand(n_rays, 1)
        t_max = torch.as_tensor(far_plane, dtype=torch.float32, device=device).expand(n_rays, 1)
        s_bins = torch.tensor([[0.0, 1.0]], device=device).expand(n_rays, 2)
        cdf = s_bins
        for level_fn, level_samples in zip(prop_sigma_fns, prop_samples):
            u = _cdf_levels(n_rays, level_samples, True, stratified, device)
            s_vals = invert_cdf(s_bins, cdf, u)
            t_vals = _s_to_t(sampling_type, s_vals, t_min, t_max)
            with torch.set_grad_enabled(requires_grad):
                sigmas = level_fn(t_vals[:, :-1], t_vals[:, 1:])
                assert sigmas.shape == t_vals[:, 1:].shape, "sigma_fn must return [Nr, n]"
                optical = sigmas * (t_vals[:, 1:] - t_vals[:, :-1])
                trans = torch.exp(-torch.cumsum(optical, -1))
            # a small floor keeps empty rays sampling uniformly instead of piling up
            cdf_level = 1.0 - trans.detach()
            cdf_level = cdf_level + 1e-5 * torch.arange(1, level_samples + 1, device=device)
            cdf = torch.cat([torch.zeros_like(cdf_level[:, :1]), cdf_level], -1)
            s_bins = s_vals
        u = _cdf_levels(n_rays, num_samples, False, stratified, device)
        s_fine = invert_cdf(s_bins, cdf, u)
        s_all, _ = torch.sort(torch.cat([s_bins, s_fine], -1), -1)
        t_all = _s_to_t(sampling_type, s_all, t_min, t_max)
        return t_all[:, :-1], t_all[:, 1:]
