from dataclasses import dataclass

import torch

import threestudio
from threestudio.kernels.ray_marching import render_weight_from_density
from threestudio.models.renderers.base import VolumeRenderer
from threestudio.models.renderers.volume_compositing import PackedSamplesMixin, finish_render
from threestudio.utils.errors import ConfigError
from threestudio.utils.ops import chunk_batch, get_activation
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor

ESTIMATORS = ("occgrid", "proposal", "importance")


@threestudio.register("nerf-volume-renderer")
class NeRFVolumeRenderer(PackedSamplesMixin, VolumeRenderer):
    """Volume rendering of a density field (NeRF quadrature) with packed samples from an
    occupancy grid, importance sampling or a proposal network."""

    @dataclass
    class Config(VolumeRenderer.Config):
        # march step = 1.732 * 2 * radius / num_samples_per_ray; for importance/proposal the
        # number of fine samples
        num_samples_per_ray: int = 512
        eval_chunk_size: int = 160000  # points per geometry/material call in eval (0: all)
        randomized: bool = True  # jittered (stratified) samples in training; never in eval

        # clip distances along the ray; importance/proposal sample all of [near, far] (set both)
        near_plane: float = 0.0
        far_plane: float = 1e10  # see near_plane

        return_comp_normal: bool = False  # also return comp_normal in training
        # in training, return normal_perturb: normals at points jittered by 0.01
        return_normal_perturb: bool = False

        estimator: str = "occgrid"  # "occgrid", "proposal" or "importance"

        # occgrid: skip empty cells, stop rays at transmittance < 1e-4 (false: march everything)
        grid_prune: bool = True
        # occgrid: drop samples with alpha < min(0.01, mean occupancy), as nerfacc (one no-grad density pass)
        prune_alpha_threshold: bool = True
        grid_resolution: int = 32  # occgrid: cells per axis

        # proposal: kwargs of create_network_with_input_encoding (n_input_dims, n_output_dims,
        # encoding_config, network_config)
        proposal_network_config: Optional[dict] = None
        # proposal: {name: <torch.optim class>, args: {...}} (null: Adam, lr 1e-2)
        prop_optimizer_config: Optional[dict] = None
        # proposal: {name: <torch.optim.lr_scheduler class>, args: {...}}
        prop_scheduler_config: Optional[dict] = None
        num_samples_per_ray_proposal: int = 64  # proposal: coarse samples from the proposal net

        # importance: coarse samples from the geometry itself
        num_samples_per_ray_importance: int = 64

    cfg: Config

    def configure_renderer(self) -> None:
        if self.cfg.estimator not in ESTIMATORS:
            raise ConfigError(
                f"renderer.estimator: unknown estimator '{self.cfg.estimator}' "
                f"(use one of {', '.join(ESTIMATORS)})"
            )
        if self.cfg.estimator == "occgrid":
            self.configure_occgrid()
        elif self.cfg.estimator == "importance":
            self.configure_importance()
        else:
            self._configure_proposal()

    def _configure_proposal(self) -> None:
        from threestudio.models.networks import create_network_with_input_encoding

        if self.cfg.proposal_network_config is None:
            raise ConfigError(
                "renderer.proposal_network_config is required with estimator: proposal "
                "(n_input_dims, n_output_dims, encoding_config, network_config)"
            )
        self.prop_net = create_network_with_input_encoding(**self.cfg.proposal_network_config)
        opt_cfg = self.cfg.prop_optimizer_config or {"name": "Adam", "args": {"lr": 1e-2}}
        optim_cls = getattr(torch.optim, opt_cfg["name"], None)
        if optim_cls is None:
            raise ConfigError(f"renderer.prop_optimizer_config.name: unknown '{opt_cfg['name']}'")
        # the proposal network trains on its own loss, outside the system's optimiser
        self._prop_optim = [optim_cls(self.prop_net.parameters(), **opt_cfg.get("args", {}))]
        self.prop_scheduler = None
        if self.cfg.prop_scheduler_config is not None:
            # the systems' scheduler parser: it also builds ChainedScheduler / SequentialLR
            # from their lists of schedulers (the published propnet config chains one)
            from threestudio.systems.utils import get_scheduler
            from threestudio.utils.config import config_to_primitive

            self.prop_scheduler = get_scheduler(
                config_to_primitive(self.cfg.prop_scheduler_config), self._prop_optim[0]
            )
        self.configure_importance()
        self.vars_in_forward: Dict[str, Any] = {"requires_grad": False}

    # ------------------------------------------------------------------ sampling

    def _density_at(self, positions):
        if self.training:
            return self.geometry.forward_density(positions)
        return chunk_batch(self.geometry.forward_density, self.cfg.eval_chunk_size, positions)

    def sample(self, rays_o, rays_d):
        """Packed ``(ray_indices, t_starts, t_ends)`` from the configured estimator."""
        n_rays = rays_o.shape[0]
        if self.cfg.estimator == "occgrid":

            def sigma_fn(t_starts, t_ends, ray_indices):
                t_mid = (t_starts + t_ends)[:, None] / 2.0
                positions = rays_o[ray_indices] + rays_d[ray_indices] * t_mid
                return self._density_at(positions)[..., 0]

            return self.occgrid_sample(rays_o, rays_d, sigma_fn=sigma_fn)

        # importance and proposal sample [near_plane, far_plane] (as the established renderer
        # does), not the ray-box interval: configs using them set both planes
        if self.cfg.estimator == "importance":
            density_fn = self.midpoint_density_fn(
                rays_o, rays_d, lambda x: self._density_at(x)[..., 0]
            )
            return self.importance_sample(
                density_fn, n_rays, self.cfg.num_samples_per_ray_importance
            )
        density_fn = self.midpoint_density_fn(rays_o, rays_d, self._proposal_density)
        requires_grad = self.training and self.vars_in_forward["requires_grad"]
        if requires_grad:
            density_fn = self._recording(density_fn)
        return self.importance_sample(
            density_fn, n_rays, self.cfg.num_samples_per_ray_proposal, requires_grad
        )

    def _proposal_density(self, positions):
        aabb = self.bbox
        x = (positions - aabb[0]) / (aabb[1] - aabb[0])
        inside = ((x > 0) & (x < 1)).all(-1)
        raw = self.prop_net(x.clamp(0, 1)).reshape(-1).to(x)
        return get_activation("shifted_trunc_exp")(raw) * inside

    def _recording(self, fn):
        def wrapped(t_starts, t_ends):
            sigmas = fn(t_starts, t_ends)
            self.vars_in_forward["prop"] = (t_starts, t_ends, sigmas)
            return sigmas

        return wrapped

    # ------------------------------------------------------------------ forward

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
            rays_o, rays_d, light_positions, output_normal=self.material.requires_normal, **kwargs
        )
        ray_indices, t_starts_, t_ends_ = (
            samples[k] for k in ("ray_indices", "t_starts", "t_ends")
        )
        geo_out = shaded["geo_out"]
        weights, trans, _ = render_weight_from_density(
            t_starts_, t_ends_, geo_out["density"][..., 0], ray_indices, n_rays
        )
        if self.training and self.cfg.estimator == "proposal":
            self.vars_in_forward["weights"] = weights.reshape(n_rays, -1)
            self.vars_in_forward["t_fine"] = (
                t_starts_.reshape(n_rays, -1),
                t_ends_.reshape(n_rays, -1),
            )

        normal = geo_out.get("normal")
        want_normal = normal is not None and (not self.training or self.cfg.return_comp_normal)
        out = finish_render(
            weights,
            samples,
            shaded,
            normal if want_normal else None,
            bg_color,
            image_shape,
            n_rays,
            self.training,
        )
        if self.training and normal is not None and self.cfg.return_normal_perturb:
            positions = samples["positions"]
            out["normal_perturb"] = self.geometry(
                positions + torch.randn_like(positions) * 1e-2,
                output_normal=self.material.requires_normal,
            )["normal"]
        return out

    # ------------------------------------------------------------------ training state

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        if self.cfg.estimator == "occgrid":

            def occ_eval_fn(x):
                # density * step approximates the alpha 1 - exp(-density * step)
                return self.geometry.forward_density(x) * self.render_step_size

            self.update_occgrid(global_step, on_load_weights, occ_eval_fn)
        elif self.cfg.estimator == "proposal":
            self.vars_in_forward["requires_grad"] = self.training and (
                self._proposal_requires_grad(global_step)
            )

    def _proposal_requires_grad(self, step: int, target: float = 5.0, ramp: int = 1000) -> bool:
        # train the proposal network every step at first, then every few steps
        since = self.vars_in_forward.get("steps_since_grad", 0)
        requires_grad = since >= min(step / ramp, 1.0) * target
        self.vars_in_forward["steps_since_grad"] = 0 if requires_grad else since + 1
        return requires_grad

    def update_step_end(self, epoch: int, global_step: int) -> None:
        if self.cfg.estimator != "proposal" or not self.training:
            return
        prop = self.vars_in_forward.pop("prop", None)
        weights = self.vars_in_forward.pop("weights", None)
        t_fine = self.vars_in_forward.pop("t_fine", None)
        if prop is None or weights is None:
            return
        loss = proposal_loss(prop, weights.detach(), t_fine)
        self.last_proposal_loss = loss.detach()
        optim = self._prop_optim[0]
        optim.zero_grad()
        loss.backward()
        optim.step()
        if self.prop_scheduler is not None:
            self.prop_scheduler.step()


def proposal_loss(prop, weights_fine, t_fine) -> Float[Tensor, ""]:
    """mip-NeRF 360's interlevel loss: the proposal's weight over the proposal intervals that
    enclose each fine interval must be at least that interval's fine weight."""
    p_starts, p_ends, p_sigmas = prop
    f_starts, f_ends = t_fine
    edges = torch.cat([p_starts[:, :1], p_ends], -1).detach().contiguous()
    cdf = 1.0 - torch.exp(-torch.cumsum(p_sigmas * (p_ends - p_starts), -1))
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
    last = edges.shape[-1] - 1
    lo = (torch.searchsorted(edges, f_starts.contiguous(), right=True) - 1).clamp(0, last)
    hi = torch.searchsorted(edges, f_ends.contiguous(), right=False).clamp(0, last)
    w_outer = cdf.gather(1, hi) - cdf.gather(1, lo)
    return (torch.relu(weights_fine - w_outer) ** 2 / (weights_fine + 1e-7)).sum(-1).mean()
