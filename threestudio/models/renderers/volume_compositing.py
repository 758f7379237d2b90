"""Steps shared by the volume renderers: flattening a camera batch, evaluating geometry and
material on packed samples, and compositing per-sample weights into images."""

import torch
import torch.nn.functional as F

from threestudio.kernels.ray_marching import (
    ImportanceEstimator,
    OccGridEstimator,
    accumulate_along_rays,
)
from threestudio.utils.ops import chunk_batch, validate_empty_rays
from threestudio.utils.typing import Any, Callable, Dict, Float, Int, Optional, Tensor, Tuple


def flatten_rays(rays_o, rays_d, light_positions):
    """[B,H,W,3] rays and [B,3] lights -> [Nr,3] each (lights repeated per pixel)."""
    batch_size, height, width = rays_o.shape[:3]
    rays_o_flat = rays_o.reshape(-1, 3)
    rays_d_flat = rays_d.reshape(-1, 3)
    lights_flat = light_positions.reshape(-1, 1, 1, 3).expand(-1, height, width, -1).reshape(-1, 3)
    return rays_o_flat, rays_d_flat, lights_flat


def shade_samples(
    renderer,
    positions: Float[Tensor, "Ns 3"],
    t_dirs: Float[Tensor, "Ns 3"],
    t_light_positions: Float[Tensor, "Ns 3"],
    rays_d: Float[Tensor, "B H W 3"],
    output_normal: bool,
    **kwargs,
) -> Dict[str, Any]:
    """Geometry, material and background outputs; chunked (``eval_chunk_size``) in eval mode."""
    chunk = 0 if renderer.training else renderer.cfg.eval_chunk_size
    geo_out = chunk_batch(renderer.geometry, chunk, positions, output_normal=output_normal)
    rgb = chunk_batch(
        renderer.material,
        chunk,
        viewdirs=t_dirs,
        positions=positions,
        light_positions=t_light_positions,
        **geo_out,
        **kwargs,
    )
    bg = chunk_batch(renderer.background, chunk, dirs=rays_d)
    return {"geo_out": geo_out, "rgb_fg_all": rgb, "comp_rgb_bg": bg}


def resolve_bg_color(
    bg_color: Optional[Tensor], comp_rgb_bg: Tensor, batch_size: int, height: int, width: int
) -> Float[Tensor, "Nr C"]:
    """The colour behind each ray: the background module's, or ``bg_color`` given as [C],
    [B, C] (one colour per image, e.g. Zero-1-to-3's random background) or [B, H, W, C]."""
    if bg_color is None:
        bg_color = comp_rgb_bg
    elif bg_color.dim() == 1:
        bg_color = bg_color.view(1, 1, 1, -1).expand(batch_size, height, width, -1)
    elif bg_color.shape[:-1] == (batch_size,):
        bg_color = bg_color[:, None, None, :].expand(-1, height, width, -1)
    return bg_color.reshape(batch_size * height * width, -1)


def composite(
    weights: Float[Tensor, "Ns"],
    t_positions: Float[Tensor, "Ns 1"],
    ray_indices: Int[Tensor, "Ns"],
    n_rays: int,
    rgb_fg_all: Float[Tensor, "Ns C"],
    bg_color: Float[Tensor, "Nr C"],
    normal: Optional[Float[Tensor, "Ns 3"]],
    shape,
) -> Dict[str, Tensor]:
    """Images from packed weights: colour over the background, opacity, expected depth, HiFA's
    depth variance (where opacity > 0.5) and the weighted normal (mapped to [0, 1] for display)."""
    batch_size, height, width = shape
    opacity = accumulate_along_rays(weights, None, ray_indices, n_rays)
    depth = accumulate_along_rays(weights, t_positions, ray_indices, n_rays)
    comp_rgb_fg = accumulate_along_rays(weights, rgb_fg_all, ray_indices, n_rays)
    weights_normalized = weights / opacity.clamp(min=1e-5)[ray_indices, 0]
    z_mean = accumulate_along_rays(weights_normalized, t_positions, ray_indices, n_rays)
    z_variance = (
        accumulate_along_rays(
            weights_normalized, (t_positions - z_mean[ray_indices]) ** 2, ray_indices, n_rays
        )
        * (opacity > 0.5).float()
    )
    comp_rgb = comp_rgb_fg + bg_color * (1.0 - opacity)

    def image(x):
        return x.view(batch_size, height, width, -1)

    out = {
        "comp_rgb": image(comp_rgb),
        "comp_rgb_fg": image(comp_rgb_fg),
        "opacity": image(opacity),
        "depth": image(depth),
        "z_variance": image(z_variance),
    }
    if normal is not None:
        comp_normal = accumulate_along_rays(weights, normal, ray_indices, n_rays)
        comp_normal = (F.normalize(comp_normal, dim=-1) + 1.0) / 2.0 * opacity
        out["comp_normal"] = image(comp_normal)
    return out


def packed_samples(
    rays_o_flat: Float[Tensor, "Nr 3"],
    rays_d_flat: Float[Tensor, "Nr 3"],
    ray_indices: Int[Tensor, "Ns"],
    t_starts: Float[Tensor, "Ns"],
    t_ends: Float[Tensor, "Ns"],
) -> Dict[str, Tensor]:
    """Sample midpoints, directions and intervals of packed samples (one dummy sample when no
    ray has any, so shapes downstream stay valid)."""
    ray_indices, t_starts, t_ends = validate_empty_rays(ray_indices, t_starts, t_ends)
    ray_indices = ray_indices.long()
    t_dirs = rays_d_flat[ray_indices]
    t_positions = ((t_starts + t_ends) / 2.0)[:, None]
    return {
        "ray_indices": ray_indices,
        "t_starts": t_starts,
        "t_ends": t_ends,
        "t_dirs": t_dirs,
        "t_positions": t_positions,
        "t_intervals": (t_ends - t_starts)[:, None],
        "positions": rays_o_flat[ray_indices] + t_dirs * t_positions,
    }


def finish_render(
    weights: Float[Tensor, "Ns"],
    samples: Dict[str, Tensor],
    shaded: Dict[str, Any],
    normal: Optional[Float[Tensor, "Ns 3"]],
    bg_color: Optional[Tensor],
    image_shape,
    n_rays: int,
    training: bool,
) -> Dict[str, Tensor]:
    """Images from the packed weights, plus (in training) the per-sample tensors the systems'
    regularisers need."""
    batch_size, height, width = image_shape
    ray_indices = samples["ray_indices"]
    out = composite(
        weights,
        samples["t_positions"],
        ray_indices,
        n_rays,
        shaded["rgb_fg_all"],
        resolve_bg_color(bg_color, shaded["comp_rgb_bg"], batch_size, height, width),
        normal,
        image_shape,
    )
    out["comp_rgb_bg"] = shaded["comp_rgb_bg"].view(batch_size, height, width, -1)
    out["num_samples"] = torch.tensor(ray_indices.numel(), device=weights.device)
    if training:
        out.update(
            {
                "weights": weights[:, None],
                "t_points": samples["t_positions"],
                "t_intervals": samples["t_intervals"],
                "t_dirs": samples["t_dirs"],
                "ray_indices": ray_indices,
                "points": samples["positions"],
                **shaded["geo_out"],
            }
        )
    return out


class PackedSamplesMixin:
    """What the packed-sample volume renderers (NeRF, NeuS) share: the step size, an occupancy
    grid estimator and its sampling and updates, hierarchical (importance) sampling between the
    near and far planes, and the step from camera rays to shaded samples. Needs Config fields
    ``num_samples_per_ray``, ``randomized``, ``eval_chunk_size``, ``grid_prune``,
    ``prune_alpha_threshold``, ``grid_resolution``, ``near_plane``, ``far_plane``, and a
    ``sample(rays_o_flat, rays_d_flat)`` giving packed samples."""

    @property
    def render_step_size(self) -> float:
        # the box diagonal divided into num_samples_per_ray steps
        return 1.732 * 2 * self.cfg.radius / self.cfg.num_samples_per_ray

    @property
    def randomized(self) -> bool:
        # derived from self.training, not set in train()/eval(): Lightning restores modes after
        # validation by assigning .training directly, which bypasses such overrides
        return self.training and self.cfg.randomized

    def configure_occgrid(self) -> None:
        self.estimator = OccGridEstimator(self.bbox.view(-1), self.cfg.grid_resolution)
        if not self.cfg.grid_prune:
            self.estimator.fill(True)

    def occgrid_sample(
        self,
        rays_o: Float[Tensor, "Nr 3"],
        rays_d: Float[Tensor, "Nr 3"],
        sigma_fn: Optional[Callable] = None,
        alpha_fn: Optional[Callable] = None,
    ) -> Tuple[Int[Tensor, "Ns"], Float[Tensor, "Ns"], Float[Tensor, "Ns"]]:
        """Packed samples in the occupied cells; with pruning, also skip samples whose alpha
        (from ``sigma_fn`` or ``alpha_fn``) is tiny or that lie behind an opaque surface."""
        prune = self.cfg.grid_prune and self.cfg.prune_alpha_threshold
        with torch.no_grad():
            return self.estimator.sampling(
                rays_o,
                rays_d,
                sigma_fn=sigma_fn if prune else None,
                alpha_fn=alpha_fn if prune else None,
                near_plane=self.cfg.near_plane,
                far_plane=self.cfg.far_plane,
                render_step_size=self.render_step_size,
                alpha_thre=0.01 if prune else 0.0,
                early_stop_eps=1e-4 if self.cfg.grid_prune else 0.0,
                stratified=self.randomized,
            )

    def configure_importance(self) -> None:
        self.estimator = ImportanceEstimator()

    @staticmethod
    def midpoint_density_fn(
        rays_o: Float[Tensor, "Nr 3"],
        rays_d: Float[Tensor, "Nr 3"],
        density_at: Callable[[Float[Tensor, "N 3"]], Float[Tensor, "N"]],
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """``(t_starts [Nr, n], t_ends [Nr, n]) -> densities [Nr, n]``: ``density_at`` evaluated
        at the midpoints of each ray's intervals (the form ``ImportanceEstimator`` asks for)."""

        def density_fn(t_starts: Tensor, t_ends: Tensor) -> Tensor:
            t_mid = (t_starts + t_ends)[..., None] / 2.0
            positions = rays_o[:, None] + rays_d[:, None] * t_mid
            return density_at(positions.reshape(-1, 3)).reshape(t_starts.shape)

        return density_fn

    def importance_sample(
        self,
        density_fn: Callable[[Tensor, Tensor], Tensor],
        n_rays: int,
        num_samples_coarse: int,
        requires_grad: bool = False,
    ) -> Tuple[Int[Tensor, "Ns"], Float[Tensor, "Ns"], Float[Tensor, "Ns"]]:
        """Packed samples of hierarchical sampling: ``num_samples_coarse`` intervals over
        [near_plane, far_plane] give each ray a density CDF (``density_fn``, see
        ``midpoint_density_fn``), ``num_samples_per_ray`` more are drawn from it and merged with
        them (every ray gets the same number of samples). The planes bound the samples, not the
        scene box: configs using importance sampling set both."""
        t_starts, t_ends = self.estimator.sampling(
            prop_sigma_fns=[density_fn],
            prop_samples=[num_samples_coarse],
            num_samples=self.cfg.num_samples_per_ray,
            n_rays=n_rays,
            near_plane=self.cfg.near_plane,
            far_plane=self.cfg.far_plane,
            stratified=self.randomized,
            requires_grad=requires_grad,
        )
        ray_indices = torch.arange(n_rays, device=t_starts.device)[:, None].expand_as(t_starts)
        return ray_indices.reshape(-1), t_starts.reshape(-1), t_ends.reshape(-1)

    def update_occgrid(
        self, global_step: int, on_load_weights: bool, occ_eval_fn: Callable
    ) -> None:
        if self.cfg.grid_prune and self.training and not on_load_weights:
            self.estimator.update_every_n_steps(step=global_step, occ_eval_fn=occ_eval_fn)

    def sample_and_shade(
        self,
        rays_o: Float[Tensor, "B H W 3"],
        rays_d: Float[Tensor, "B H W 3"],
        light_positions: Float[Tensor, "B 3"],
        output_normal: bool,
        **kwargs,
    ) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
        """Packed samples along the batch's rays (``packed_samples``) and the geometry,
        material and background outputs at them (``shade_samples``)."""
        rays_o_flat, rays_d_flat, lights_flat = flatten_rays(rays_o, rays_d, light_positions)
        samples = packed_samples(rays_o_flat, rays_d_flat, *self.sample(rays_o_flat, rays_d_flat))
        shaded = shade_samples(
            self,
            samples["positions"],
            samples["t_dirs"],
            lights_flat[samples["ray_indices"]],
            rays_d,
            output_normal=output_normal,
            **kwargs,
        )
        return samples, shaded
