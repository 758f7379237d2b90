from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import threestudio
from threestudio.kernels.ray_marching import render_weight_from_alpha, render_weight_from_density
from threestudio.models.renderers.base import VolumeRenderer
from threestudio.models.renderers.volume_compositing import PackedSamplesMixin, finish_render
from threestudio.utils.errors import ConfigError
from threestudio.utils.ops import chunk_batch
from threestudio.utils.typing import Dict, Float, Optional, Tensor


class LearnedVariance(nn.Module):
    """The sharpness ``inv_std = exp(10 * v)`` of the SDF-to-opacity map, with ``v`` learned."""

    def __init__(self, init_val: float):
        super().__init__()
        self.register_parameter("_inv_std", nn.Parameter(torch.tensor(float(init_val))))

    @property
    def inv_std(self) -> Float[Tensor, ""]:
        return torch.exp(self._inv_std * 10.0)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ones_like(x) * self.inv_std.clamp(1.0e-6, 1.0e6)


def volsdf_density(sdf: Tensor, inv_std: Tensor) -> Tensor:
    """VolSDF: density = alpha * LaplaceCDF_beta(-sdf) with alpha = 1 / beta = inv_std."""
    inv_std = inv_std.clamp(0.0, 80.0)
    beta = 1.0 / inv_std
    return inv_std * (0.5 + 0.5 * sdf.sign() * torch.expm1(-sdf.abs() / beta))


ESTIMATORS = ("occgrid", "importance")


@threestudio.register("neus-volume-renderer")
class NeuSVolumeRenderer(PackedSamplesMixin, VolumeRenderer):
    """Volume rendering of a signed distance field: NeuS's unbiased opacity (or VolSDF's
    Laplace density with ``use_volsdf``), with samples from an occupancy grid or, for VolSDF,
    from importance sampling of the density between the near and far planes."""

    @dataclass
    class Config(VolumeRenderer.Config):
        # occgrid: march step = 1.732 * 2 * radius / num_samples_per_ray; importance: the
        # number of fine samples
        num_samples_per_ray: int = 512
        randomized: bool = True  # jittered (stratified) samples in training; never in eval
        eval_chunk_size: int = 160000  # points per geometry/material call in eval (0: all)
        # "occgrid" (march an occupancy grid) or "importance" (hierarchical sampling of
        # [near_plane, far_plane]; needs use_volsdf)
        estimator: str = "occgrid"
        # occgrid: skip empty cells of the occupancy grid, stop rays at transmittance < 1e-4
        grid_prune: bool = True
        # occgrid: drop samples with alpha < 0.01 (alpha from the SDF, head-on)
        prune_alpha_threshold: bool = True
        grid_resolution: int = 32  # occgrid: occupancy grid cells per axis
        # importance: coarse samples whose VolSDF density guides the fine ones
        num_samples_per_ray_importance: int = 64
        learned_variance_init: float = 0.3  # inv_std = exp(10 * v), v learned, starts here
        # steps over which NeuS's cosine anneals to the true one (0: no annealing)
        cos_anneal_end_steps: int = 0
        use_volsdf: bool = False  # VolSDF's Laplace-CDF density instead of NeuS's opacity
        # clip distances along the ray; importance samples all of [near, far] (set both)
        near_plane: float = 0.0
        far_plane: float = 1e10  # see near_plane

    cfg: Config

    def configure_renderer(self) -> None:
        if self.cfg.estimator not in ESTIMATORS:
            raise ConfigError(
                f"renderer.estimator: unknown estimator '{self.cfg.estimator}' "
                f"(use one of {', '.join(ESTIMATORS)})"
            )
        if self.cfg.estimator == "importance" and not self.cfg.use_volsdf:
            raise ConfigError(
                "renderer.estimator=importance needs renderer.use_volsdf=true: NeuS's opacity "
                "has no density to importance-sample (or use estimator=occgrid)"
            )
        self.variance = LearnedVariance(self.cfg.learned_variance_init)
        if self.cfg.estimator == "occgrid":
            self.configure_occgrid()
        else:
            self.configure_importance()
        self.cos_anneal_ratio = 1.0

    def _alpha_from_sdf_only(self, sdf: Tensor) -> Tensor:
        """Opacity of one step assuming the ray meets the surface head on (no normal needed);
        used for pruning."""
        if self.cfg.use_volsdf:
            density = volsdf_density(sdf, self.variance(sdf))
            return 1.0 - torch.exp(-density * self.render_step_size)
        inv_std = self.variance(sdf)
        prev_cdf = torch.sigmoid((sdf + self.render_step_size * 0.5) * inv_std)
        next_cdf = torch.sigmoid((sdf - self.render_step_size * 0.5) * inv_std)
        return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clip(0.0, 1.0)

    def get_alpha(self, sdf, normal, dirs, dists) -> Float[Tensor, "Ns 1"]:
        """NeuS's discrete opacity from the SDF at the interval's ends, estimated from the SDF
        and its slope along the ray (annealed from a softened cosine to the true one)."""
        inv_std = self.variance(sdf)
        true_cos = (dirs * normal).sum(-1, keepdim=True)
        iter_cos = -(
            F.relu(-true_cos * 0.5 + 0.5) * (1.0 - self.cos_anneal_ratio)
            + F.relu(-true_cos) * self.cos_anneal_ratio
        )
        next_sdf = sdf + iter_cos * dists * 0.5
        prev_sdf = sdf - iter_cos * dists * 0.5
        prev_cdf = torch.sigmoid(prev_sdf * inv_std)
        next_cdf = torch.sigmoid(next_sdf * inv_std)
        return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clip(0.0, 1.0)

    def _sdf_at(self, positions: Float[Tensor, "N 3"]) -> Float[Tensor, "N 1"]:
        if self.training:
            return self.geometry.forward_sdf(positions)
        return chunk_batch(self.geometry.forward_sdf, self.cfg.eval_chunk_size, positions)

    def sample(self, rays_o, rays_d):
        """Packed ``(ray_indices, t_starts, t_ends)`` from the configured estimator."""
        if self.cfg.estimator == "importance":

            def density_at(positions):
                sdf = self._sdf_at(positions)
                return volsdf_density(sdf, self.variance(sdf))[..., 0]

            density_fn = self.midpoint_density_fn(rays_o, rays_d, density_at)
            return self.importance_sample(
                density_fn, rays_o.shape[0], self.cfg.num_samples_per_ray_importance
            )

        def alpha_fn(t_starts, t_ends, ray_indices):
            t_mid = (t_starts + t_ends)[:, None] / 2.0
            positions = rays_o[ray_indices] + rays_d[ray_indices] * t_mid
            return self._alpha_from_sdf_only(self._sdf_at(positions))[..., 0]

        return self.occgrid_sample(rays_o, rays_d, alpha_fn=alpha_fn)

    def forward(
        self,
        rays_o: Float[Tensor, "B H W 3"],
        rays_d: Float[Tensor, "B H W 3"],
        light_positions: Float[Tensor, "B 3"],
        bg_color: Optional[Tensor] = None,
        **kwargs,
    ) -> Dict[str, Tensor]:
        image_shape = rays_o.shape[:3]
        n_rays = image_shape.numel()
        samples, shaded = self.sample_and_shade(
            rays_o, rays_d, light_positions, output_normal=True, **kwargs
        )
        ray_indices, t_starts_, t_ends_ = (
            samples[k] for k in ("ray_indices", "t_starts", "t_ends")
        )
        geo_out = shaded["geo_out"]
        if self.cfg.use_volsdf:
            density = volsdf_density(geo_out["sdf"], self.variance(geo_out["sdf"]))
            weights, _, _ = render_weight_from_density(
                t_starts_, t_ends_, density[..., 0], ray_indices, n_rays
            )
        else:
            # NeuS's cosine uses the ray direction as a unit vector
            alpha = self.get_alpha(
                geo_out["sdf"],
                geo_out["normal"],
                F.normalize(samples["t_dirs"], dim=-1),
                samples["t_intervals"],
            )
            weights, _ = render_weight_from_alpha(alpha[..., 0], ray_indices, n_rays)

        out = finish_render(
            weights,
            samples,
            shaded,
            geo_out.get("normal"),
            bg_color,
            image_shape,
            n_rays,
            self.training,
        )
        out["inv_std"] = self.variance.inv_std  # the current sharpness, for logging
        return out

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        self.cos_anneal_ratio = (
            1.0
            if self.cfg.cos_anneal_end_steps == 0
            else min(1.0, global_step / self.cfg.cos_anneal_end_steps)
        )

        if self.cfg.estimator != "occgrid":
            return

        def occ_eval_fn(x):
            return self._alpha_from_sdf_only(self.geometry.forward_sdf(x))

        self.update_occgrid(global_step, on_load_weights, occ_eval_fn)
