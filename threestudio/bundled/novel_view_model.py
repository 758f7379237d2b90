"""The recipe of the bundled novel-view model (``load/tiny-shapes-zero123``): a Zero-1-to-3-style
pipeline for the world of ``threestudio.bundled.shapes``.

Its parts are those of a converted Zero-1-to-3 folder (``extern.zero123.Zero123Pipeline``): a
latent UNet whose 8 input channels are the noisy latent and the conditioning image's VAE latent,
cross-attending to one token made by ``CCProjection`` from the CLIP image embedding
(``CLIPVisionModelWithProjection``) and the relative camera [Δpolar (rad), sin Δazimuth,
cos Δazimuth, Δdistance]; the autoencoder is the one of ``load/tiny-shapes-sd`` (each folder
holds its own copy, as real Zero-1-to-3 folders do). So ``zero123-guidance`` loads it through
``pretrained_model_name_or_path: load/tiny-shapes-zero123`` as it loads a converted
Zero-1-to-3 checkpoint. It is trained on pairs of views of one object instance (same shape,
colour and scale), seen from the cameras of the published zero123 configs: distance about 3.8,
field of view 20 degrees. ``scripts/train_novel_view_model.py`` trains it.
"""

import copy
import os

import torch
from tqdm import tqdm

from extern.zero123 import CCProjection, Zero123Pipeline
from threestudio.bundled.examples import LIGHT_DISTANCE, LIGHT_OFFSET_DEG
from threestudio.bundled.latent_model import build_latent_unet, build_sd_scheduler, encode_dataset
from threestudio.bundled.shapes import COLORS, ShapeDataset, ShapeRenderer
from threestudio.bundled.tiny_model import ema_update, min_snr_step, warmup_cosine_adamw
from threestudio.utils.paths import LOAD_DIR
from threestudio.utils.typing import Callable, Dict, Float, Integer, List, Optional, Tensor, Tuple

NOVEL_VIEW_MODEL_PATH = os.path.join(LOAD_DIR, "tiny-shapes-zero123")
# the cameras of the published zero123 configs (and of load/images/): the object is seen from
# about 3.8 units through a 20 degree field of view; elevation and azimuth are the world's
CAMERA_CONFIG = {"fovy_range": [20, 20], "camera_distance_range": [3.6, 4.0]}
COND_CAMERA_DISTANCE = 3.8
FOVY_DEG = 20.0


# ============ the pipeline's parts ============


def build_image_encoder(projection_dim: int = 64, image_size: int = 32, hidden_size: int = 64):
    """A small CLIP vision transformer (8 px patches: 16 patches of a 32x32 image, 2 layers)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_attention_heads=4,
            num_hidden_layers=2,
            image_size=image_size,
            patch_size=8,
            projection_dim=projection_dim,
        )
    )


def build_novel_view_pipeline(
    vae, width: int = 64, unet_channels: Tuple[int, ...] = (32, 64, 64)
) -> Zero123Pipeline:
    """A fresh (untrained) pipeline around the trained ``vae``; ``width`` is the cross-attention
    width (and the CLIP projection's). The UNet is narrower than the latent text-to-image
    model's so that twice the steps fit the CPU budget."""
    latent_size = vae.config.sample_size // 2 ** (len(vae.config.block_out_channels) - 1)
    return Zero123Pipeline(
        unet=build_latent_unet(latent_size, 8, width, unet_channels),
        vae=vae,
        image_encoder=build_image_encoder(width, vae.config.sample_size),
        cc_projection=CCProjection(width + 4, width),
        scheduler=build_sd_scheduler(),
    )


def relative_camera(
    cond_elevation: Float[Tensor, "B"],
    cond_azimuth: Float[Tensor, "B"],
    cond_distance: Float[Tensor, "B"],
    elevation: Float[Tensor, "B"],
    azimuth: Float[Tensor, "B"],
    distance: Float[Tensor, "B"],
) -> Float[Tensor, "B 4"]:
    """Zero-1-to-3's relative camera of a target view, exactly as ``zero123-guidance``'s
    ``camera_embedding`` computes it: [Δpolar (rad), sin Δazimuth, cos Δazimuth, Δdistance],
    polar = 90° - elevation (degrees in, scene units for the distances)."""
    d_polar = (90 - elevation) - (90 - cond_elevation)
    d_azimuth = torch.deg2rad(azimuth - cond_azimuth)
    return torch.stack(
        [
            torch.deg2rad(d_polar),
            torch.sin(d_azimuth),
            torch.cos(d_azimuth),
            distance - cond_distance,
        ],
        dim=-1,
    )


def images_01(data: ShapeDataset, idx: Integer[Tensor, "B"]) -> Float[Tensor, "B 3 H W"]:
    return data.images[idx].permute(0, 3, 1, 2).float() / 255.0


# ============ training pairs ============


def group_table(data: ShapeDataset) -> Tuple[Integer[Tensor, "G"], Integer[Tensor, "G"]]:
    """First index and size of each group of views (one object instance each); the renders
    keep a group's views together."""
    assert data.group_idx is not None, "the renders carry no object groups (re-render them)"
    groups, sizes = torch.unique_consecutive(data.group_idx, return_counts=True)
    assert len(groups) == len(torch.unique(data.group_idx)), "a group's views are not together"
    starts = torch.cumsum(sizes, 0) - sizes
    return starts, sizes


def sample_pairs(
    data: ShapeDataset, n: int, gen: torch.Generator
) -> Tuple[Integer[Tensor, "n"], Integer[Tensor, "n"], Float[Tensor, "n 4"]]:
    """``n`` (conditioning view, target view) pairs of the same object instance, uniformly over
    the views (the target may be the conditioning view itself), with the relative camera."""
    starts, sizes = group_table(data)
    cond = torch.randint(0, len(data), (n,), generator=gen)
    group = torch.searchsorted(starts, cond, right=True) - 1
    offset = (torch.rand(n, generator=gen) * sizes[group]).long()
    target = starts[group] + offset
    camera = relative_camera(
        data.elevation[cond],
        data.azimuth[cond],
        data.camera_distance[cond],
        data.elevation[target],
        data.azimuth[target],
        data.camera_distance[target],
    )
    return cond, target, camera


# ============ training ============


def train_novel_view(
    data: ShapeDataset,
    vae,
    steps: int,
    batch_size: int = 32,
    lr: float = 5e-4,
    seed: int = 0,
    width: int = 64,
    unet_channels: Tuple[int, ...] = (32, 64, 64),
    p_uncond: float = 0.1,
    min_snr_gamma: float = 5.0,
    ema_decay: float = 0.999,
    progress: bool = True,
    log: Optional[Callable[[int, float], None]] = None,
    checkpoint: Optional[Callable[[int, Zero123Pipeline], None]] = None,
    checkpoint_every: int = 500,
) -> Tuple[Zero123Pipeline, List[float]]:
    """Trains the image encoder, ``cc_projection`` and the UNet jointly on view pairs of
    ``data`` (the ``vae`` frozen); returns the pipeline with the EMA weights and the loss
    history. The loop is ``fit_text_to_image``'s (epsilon prediction, min-SNR weighting,
    warm-up then cosine decay, EMA); the condition is the conditioning view instead of a
    caption. With ``p_uncond`` both the cross-attention token and the concat latent are
    zeroed, as ``zero123-guidance``'s unconditional branch feeds them. ``checkpoint(step,
    ema pipeline)`` is called every ``checkpoint_every`` steps (to try a model while it
    trains)."""
    mean, std = encode_dataset(vae, data)  # concat latent = posterior mode = mean, unscaled
    scale = vae.config.scaling_factor
    torch.manual_seed(seed)
    pipe = build_novel_view_pipeline(vae, width, unet_channels)
    modules = [pipe.image_encoder, pipe.cc_projection, pipe.unet]
    ema = Zero123Pipeline(
        unet=copy.deepcopy(pipe.unet),
        vae=vae,
        image_encoder=copy.deepcopy(pipe.image_encoder),
        cc_projection=copy.deepcopy(pipe.cc_projection),
        scheduler=pipe.scheduler,
    )
    ema_modules = [ema.image_encoder, ema.cc_projection, ema.unet]
    params = [p for m in modules for p in m.parameters()]
    opt, sched = warmup_cosine_adamw(params, lr, steps)
    alphas = pipe.scheduler.alphas_cumprod
    gen = torch.Generator().manual_seed(seed)
    history: List[float] = []
    for m in modules:
        m.train()
    bar = tqdm(range(steps), desc="training novel-view model", disable=not progress)
    for step in bar:
        cond, target, camera = sample_pairs(data, batch_size, gen)
        clip = pipe.encode_image_clip(images_01(data, cond))
        cross = pipe.cross_attention_states(clip, camera)
        concat = mean[cond]
        keep = (torch.rand(batch_size, generator=gen) >= p_uncond).float()
        cross = cross * keep[:, None, None]
        concat = concat * keep[:, None, None, None]
        x0 = (mean[target] + std[target] * torch.randn(mean[target].shape, generator=gen)) * scale
        t = torch.randint(
            0, pipe.scheduler.config.num_train_timesteps, (batch_size,), generator=gen
        )
        noise = torch.randn(x0.shape, generator=gen)
        xt = pipe.scheduler.add_noise(x0, noise, t)
        pred = pipe.predict_noise(xt, t, cross, concat)
        loss = min_snr_step(pred, noise, alphas[t], min_snr_gamma, opt, sched, params)
        decay = min(ema_decay, (1 + step) / (10 + step))
        for e, m in zip(ema_modules, modules):
            ema_update(e, m, decay)
        history.append(loss.item())
        if step % 50 == 0:
            recent = sum(history[-50:]) / len(history[-50:])
            bar.set_postfix(loss=f"{recent:.4f}")
            if log is not None:
                log(step, recent)
        if checkpoint is not None and step > 0 and step % checkpoint_every == 0:
            checkpoint(step, ema)
    for m in ema_modules:
        m.eval()
    return ema, history


# ============ sampling ============


@torch.no_grad()
def sample_novel_views(
    pipe: Zero123Pipeline,
    image: Float[Tensor, "B_or_1 3 H W"],
    camera: Float[Tensor, "B 4"],
    guidance_scale: float = 3.0,
    steps: int = 50,
    seed: int = 0,
) -> Float[Tensor, "B H W 3"]:
    """Novel views of ``image`` (in [0, 1]; one image for all cameras or one per camera) at the
    relative cameras, by ancestral (DDPM)
    sampling with the guidance's classifier-free guidance (unconditional = zero token and zero
    concat latent). ``Zero123Pipeline.__call__`` samples the same way with DDIM; the tiny model
    gives cleaner samples this way."""
    from diffusers import DDPMScheduler

    ddpm = DDPMScheduler.from_config(pipe.scheduler.config)
    ddpm.set_timesteps(steps)
    b = camera.shape[0]
    clip = pipe.encode_image_clip(image)
    cond = pipe.cross_attention_states(clip, camera)
    concat = pipe.encode_image_concat(image).expand(b, -1, -1, -1)
    cross = torch.cat([cond, torch.zeros_like(cond)])
    concat = torch.cat([concat, torch.zeros_like(concat)])
    gen = torch.Generator().manual_seed(seed)
    size = pipe.latent_size
    z = torch.randn(b, pipe.unet.config.out_channels, size, size, generator=gen)
    for t in ddpm.timesteps:
        pred = pipe.predict_noise(torch.cat([z, z]), t.expand(2 * b), cross, concat)
        c, u = pred.chunk(2)
        z = ddpm.step(u + guidance_scale * (c - u), t, z, generator=gen).prev_sample
    images = pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample
    return (images.permute(0, 2, 3, 1) * 0.5 + 0.5).clamp(0.0, 1.0)


# ============ ground truth for the figures and tests ============


@torch.no_grad()
def render_views(
    renderer: ShapeRenderer,
    shape: str,
    color: str,
    elevation: Float[Tensor, "B"],
    azimuth: Float[Tensor, "B"],
    distance: Float[Tensor, "B"],
    fovy: float = FOVY_DEG,
) -> Float[Tensor, "B H W 3"]:
    """Renders of the world's object (its exact albedo, scale 1) from the given cameras, lit as
    the example images are (the light above and to the right of each camera): the ground truth
    of novel views of ``load/images/``."""
    from threestudio.data.uncond import make_camera_batch, spherical_to_cartesian

    light = spherical_to_cartesian(
        elevation + LIGHT_OFFSET_DEG[0],
        azimuth + LIGHT_OFFSET_DEG[1],
        torch.full_like(elevation, LIGHT_DISTANCE),
    )
    h, w = renderer.camera_cfg.height, renderer.camera_cfg.width
    batch = make_camera_batch(
        elevation, azimuth, distance, torch.full_like(elevation, fovy), h, w, light
    )
    batch.update(height=h, width=w)
    return renderer.render(shape, COLORS[color], batch)


def view_grid_cameras(
    cond_elevation: float, azimuths: List[float], elevations: List[float]
) -> Dict[str, Tensor]:
    """Absolute target cameras (each elevation with each azimuth, distance 3.8) and their
    relative cameras from a conditioning view at (``cond_elevation``, 0, 3.8)."""
    el = torch.tensor([e for e in elevations for _ in azimuths], dtype=torch.float32)
    az = torch.tensor([a for _ in elevations for a in azimuths], dtype=torch.float32)
    dist = torch.full_like(el, COND_CAMERA_DISTANCE)
    camera = relative_camera(
        torch.full_like(el, cond_elevation), torch.zeros_like(az), dist, el, az, dist
    )
    return {"elevation": el, "azimuth": az, "distance": dist, "camera": camera}
