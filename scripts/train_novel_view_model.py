"""Rebuilds the bundled novel-view model (``load/tiny-shapes-zero123``) from scratch on a CPU.

    python scripts/train_novel_view_model.py                 # data, model, figures, card
    python scripts/train_novel_view_model.py --steps 100     # a quick, worse model (for trying)
    python scripts/train_novel_view_model.py --eval-only     # redo the figures and the card

1. renders the synthetic world (``threestudio.bundled.shapes``) from the cameras of the
   published zero123 configs (distance about 3.8, field of view 20 degrees, the world's
   elevations and azimuths); every 16 views share one object instance;
2. trains the Zero-1-to-3-style model (CLIP image encoder + camera projection + UNet, jointly,
   from scratch) on pairs of views of one instance, in the latents of the autoencoder of
   ``load/tiny-shapes-sd`` (frozen; ``scripts/train_latent_model.py`` trains it);
3. samples novel views of the example images (``load/images/``) and of held-out renders,
   scores them with the world's classifier (``load/tiny-shapes/classifier``) and against the
   ground-truth renders of the same cameras, and writes the ``Zero123Pipeline`` folder, the
   sample grid and the model card (README.md) with every figure measured on the way.
Seeded: the same command on the same machine gives the same weights.
"""

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from extern.zero123 import Zero123Pipeline, load_rgba_image  # noqa: E402
from threestudio.bundled import novel_view_model as nv  # noqa: E402
from threestudio.bundled.building import folder_size_mb, rendered, save_grid  # noqa: E402
from threestudio.bundled.classifier import ShapeColorClassifier  # noqa: E402
from threestudio.bundled.examples import EXAMPLE_IMAGES, example_image_path  # noqa: E402
from threestudio.bundled.latent_model import LATENT_MODEL_PATH  # noqa: E402
from threestudio.bundled.shapes import COLORS, SHAPES, ShapeRenderer  # noqa: E402
from threestudio.bundled.tiny_model import BUNDLED_MODEL_PATH  # noqa: E402

# the novel views of the figures: every azimuth step of 90 degrees at three elevations
GRID_AZIMUTHS = [0.0, 90.0, 180.0, 270.0]
GRID_ELEVATIONS = [0.0, 30.0, 60.0]
HELDOUT_TARGETS = 8  # novel views per held-out conditioning render


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default=nv.NOVEL_VIEW_MODEL_PATH, help="pipeline folder to write")
    p.add_argument("--work-dir", default="outputs/tiny-shapes-build", help="rendered data cache")
    p.add_argument(
        "--vae",
        default=os.path.join(LATENT_MODEL_PATH, "vae"),
        help="the shared autoencoder (trained by train_latent_model.py); copied into the folder",
    )
    p.add_argument("--views-per-object", type=int, default=320)
    p.add_argument("--heldout-views-per-object", type=int, default=32)
    p.add_argument("--steps", type=int, default=3500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--width", type=int, default=64, help="cross-attention / CLIP width")
    p.add_argument(
        "--unet-channels", type=int, nargs=3, default=[32, 64, 64], help="UNet block widths"
    )
    p.add_argument("--guidance-scale", type=float, default=3.0)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--sample-seeds", type=int, default=2, help="samples per view for the scores")
    p.add_argument(
        "--classifier",
        default=os.path.join(BUNDLED_MODEL_PATH, "classifier"),
        help="the world's shape-and-colour classifier (trained by train_tiny_model.py)",
    )
    p.add_argument("--eval-only", action="store_true", help="load --out, redo figures and card")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.time()
    size = 32
    # 1. data
    t0 = time.time()
    train = rendered(
        args.work_dir, "train", args.views_per_object, size, args.seed, nv.CAMERA_CONFIG, "_zero123"
    )
    heldout = rendered(
        args.work_dir,
        "heldout",
        args.heldout_views_per_object,
        size,
        args.seed + 1000,
        nv.CAMERA_CONFIG,
        "_zero123",
    )
    t_data = time.time() - t0
    print(f"data: {len(train)} training and {len(heldout)} held-out renders ({t_data:.0f} s)")

    # 2. the model
    stats_path = os.path.join(args.out, "training_stats.json")
    if args.eval_only:
        pipe = Zero123Pipeline.from_pretrained(args.out)
        with open(stats_path) as f:
            stats = json.load(f)
    else:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.vae).eval()
        vae.requires_grad_(False)
        t0 = time.time()
        pipe, history = nv.train_novel_view(
            train,
            vae,
            args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            width=args.width,
            unet_channels=tuple(args.unet_channels),
            checkpoint=lambda step, ema: ema.save_pretrained(
                os.path.join(args.work_dir, "zero123-checkpoint")
            ),
        )
        t_train = time.time() - t0
        os.makedirs(args.out, exist_ok=True)
        pipe.save_pretrained(args.out)
        stats = {
            "training_images": len(train),
            "views_per_group": int(nv.group_table(train)[1].max()),
            "image_size": size,
            "latent_size": pipe.latent_size,
            "vae": args.vae,
            "vae_scaling_factor": pipe.vae.config.scaling_factor,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "width": args.width,
            "unet_channels": list(args.unet_channels),
            "seed": args.seed,
            "final_loss": sum(history[-100:]) / len(history[-100:]),
            "loss_at": {str(s): history[s] for s in range(0, len(history), 100)},
            "unet_parameters": sum(p.numel() for p in pipe.unet.parameters()),
            "image_encoder_parameters": sum(p.numel() for p in pipe.image_encoder.parameters()),
            "cc_projection_parameters": sum(p.numel() for p in pipe.cc_projection.parameters()),
            "vae_parameters": sum(p.numel() for p in pipe.vae.parameters()),
            "render_seconds": round(t_data),
            "training_seconds": round(t_train),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}",
            "load_average": os.getloadavg()[0],
            "command": "python scripts/train_novel_view_model.py " + " ".join(argv or sys.argv[1:]),
        }

    # 3. novel views, scored
    stats.update(evaluate(pipe, heldout, args))
    stats["size_mb"] = round(folder_size_mb(args.out), 2)
    if not args.eval_only:
        stats["total_seconds"] = round(time.time() - t_start)
    with open(stats_path, "w") as f:
        json.dump(stats, f, indent=1)
    write_card(args.out, stats)
    print(json.dumps(stats, indent=1))


def prompt_index(shape: str, color: str) -> int:
    return list(COLORS).index(color) * len(SHAPES) + SHAPES.index(shape)


def heldout_conditions(heldout):
    """One conditioning render per object (the first view of its first group) with the next
    ``HELDOUT_TARGETS`` views of the same instance as targets."""
    starts, sizes = nv.group_table(heldout)
    per_object = len(starts) // 30
    for g in range(0, len(starts), per_object):
        c = int(starts[g])
        targets = torch.arange(c + 1, c + 1 + HELDOUT_TARGETS)
        yield c, targets


@torch.no_grad()
def evaluate(pipe, heldout, args) -> dict:
    """Samples of the example images (grid cameras) and of held-out renders, scored: the
    classifier's shape-and-colour accuracy, and how often a sample is closer (mean squared
    error) to the ground-truth render of its own camera than to those of the other cameras."""
    classifier = ShapeColorClassifier.load(args.classifier)
    renderer = ShapeRenderer(32, 32)
    rows, correct, total = [], {}, {}
    own, other, closer = [], [], []

    def score(kind: str, samples, gts, label: int) -> None:
        for s in range(samples.shape[0]):
            pred = classifier.prompt_log_probs(samples[s]).argmax(-1)
            correct[kind] = correct.get(kind, 0) + int((pred == label).sum())
            total[kind] = total.get(kind, 0) + pred.numel()
            err = (samples[s][:, None] - gts[None]).pow(2).mean(dim=(2, 3, 4))  # [view, gt]
            n = err.shape[0]
            d_own = err.diagonal()
            d_other = (err.sum(1) - d_own) / (n - 1)
            own.extend(d_own.tolist())
            other.extend(d_other.tolist())
            closer.extend((d_own < d_other).tolist())

    def sample(image, camera):
        return torch.stack(
            [
                nv.sample_novel_views(
                    pipe, image, camera, args.guidance_scale, args.sample_steps, seed=s
                )
                for s in range(args.sample_seeds)
            ]
        )  # [seed, view, H, W, 3]

    for name, (shape, color, elevation, *_rest) in EXAMPLE_IMAGES.items():
        path = example_image_path(name)
        if not os.path.exists(path):
            continue
        image = load_rgba_image(path, pipe.image_size)
        cams = nv.view_grid_cameras(elevation, GRID_AZIMUTHS, GRID_ELEVATIONS)
        gts = nv.render_views(
            renderer, shape, color, cams["elevation"], cams["azimuth"], cams["distance"]
        )
        samples = sample(image, cams["camera"])
        score("example", samples, gts, prompt_index(shape, color))
        cond = image.permute(0, 2, 3, 1)
        rows += [torch.cat([cond, samples[0]]), torch.cat([torch.ones_like(cond), gts])]
        print(f"example {name}: sampled {samples.shape[1]} views")
    # the held-out renders: every condition's views in one batch
    conds = list(heldout_conditions(heldout))
    cond_idx = torch.cat([torch.full([len(t)], c) for c, t in conds])
    target_idx = torch.cat([t for _, t in conds])
    camera = nv.relative_camera(
        heldout.elevation[cond_idx],
        heldout.azimuth[cond_idx],
        heldout.camera_distance[cond_idx],
        heldout.elevation[target_idx],
        heldout.azimuth[target_idx],
        heldout.camera_distance[target_idx],
    )
    all_samples = sample(nv.images_01(heldout, cond_idx), camera)
    start = 0
    for k, (c, targets) in enumerate(conds):
        samples = all_samples[:, start : start + len(targets)]
        start += len(targets)
        gts = heldout.images[targets].float() / 255.0
        label = int(heldout.color_idx[c]) * len(SHAPES) + int(heldout.shape_idx[c])
        score("heldout", samples, gts, label)
        if k % 6 == 0:  # five objects in the figure, one of each shape and colour (colour-major)
            pad = torch.ones(len(GRID_AZIMUTHS) * len(GRID_ELEVATIONS) - len(targets), 32, 32, 3)
            cond = nv.images_01(heldout, torch.tensor([c])).permute(0, 2, 3, 1)
            rows += [
                torch.cat([cond, samples[0], pad]),
                torch.cat([torch.ones_like(cond), gts, pad]),
            ]
    save_grid(torch.cat(rows), len(rows), os.path.join(args.out, "samples.png"), 2)
    return {
        "sample_accuracy_examples": correct["example"] / total["example"],
        "sample_accuracy_heldout": correct["heldout"] / total["heldout"],
        "sample_accuracy": sum(correct.values()) / sum(total.values()),
        "samples_scored": sum(total.values()),
        "mse_to_own_camera": sum(own) / len(own),
        "mse_to_other_cameras": sum(other) / len(other),
        "closer_to_own_camera": sum(closer) / len(closer),
        "sample_guidance_scale": args.guidance_scale,
        "sample_steps": args.sample_steps,
        "sample_seeds": args.sample_seeds,
        "grid_azimuths": GRID_AZIMUTHS,
        "grid_elevations": GRID_ELEVATIONS,
        "examples": [n for n in EXAMPLE_IMAGES if os.path.exists(example_image_path(n))],
    }


def write_card(folder: str, s: dict) -> None:
    examples = ", ".join(
        f"`{n}_rgba.png` (a {EXAMPLE_IMAGES[n][1]} {EXAMPLE_IMAGES[n][0]}, elevation "
        f"{EXAMPLE_IMAGES[n][2]:g})"
        for n in s["examples"]
    )
    n_params = s["unet_parameters"] + s["image_encoder_parameters"] + s["cc_projection_parameters"]
    text = f"""# tiny-shapes-zero123: the bundled novel-view model

A Zero-1-to-3-style novel-view diffusion model of the bundled world (five shapes in six colours,
the world of `load/tiny-shapes`), small enough to ship ({s["size_mb"]} MB) and to guide
image-to-3D on a laptop CPU. Given one view of an object and a camera relative to it, it draws
the object from that camera. The image-to-3D recipes of `configs/bundled/` (zero123, magic123)
use it.

It is a `Zero123Pipeline` folder (`extern/zero123.py`: `unet/`, `vae/`, `image_encoder/`,
`cc_projection/`, `scheduler/`), the layout `scripts/convert_zero123.py` writes for a converted
Zero-1-to-3 checkpoint, so `zero123-guidance` loads it through
`pretrained_model_name_or_path: load/tiny-shapes-zero123` as it loads `zero123-xl`:

    system.guidance.pretrained_model_name_or_path=load/tiny-shapes-zero123
    system.guidance.cond_image_path=load/images/sphere_rgba.png
    system.guidance.cond_camera_distance=3.8   # the cameras it knows: distance 3.8, fovy 20

## Conditioning
As in Zero-1-to-3: the UNet's 8 input channels are the noisy latent and the conditioning
image's VAE latent (posterior mode, unscaled); it cross-attends to one token,
`cc_projection([CLIP image embedding, Δpolar (rad), sin Δazimuth, cos Δazimuth, Δdistance])`,
polar = 90° - elevation. The unconditional input of classifier-free guidance is a zero token and
a zero concat latent, as `zero123-guidance` feeds it.

## Data
{s["training_images"]} renders of `threestudio.bundled.shapes.render_shape_dataset` (the world's
meshes, `nvdiff-rasterizer`, `diffuse-with-point-light-material` with ambient 0.3 and diffuse
0.7, white background), {s["image_size"]}x{s["image_size"]}, from the cameras of the published
zero123 configs: distance [3.6, 4.0], field of view 20°, elevation [-10, 80]°, all azimuths, a
point light drawn as the random-camera datamodule draws it. Every {s["views_per_group"]} views
share one object instance (shape, scale in [0.85, 1.15], albedo jittered by 0.04); a training
pair is two views of one instance (the conditioning view and the target, which may coincide).

## Recipe
- Autoencoder: the one of `load/tiny-shapes-sd` (f = 2: 32x32 images, 16x16x4 latents;
  {s["vae_parameters"] / 1e3:.0f} k parameters, scaling factor {s["vae_scaling_factor"]:.4f}),
  frozen; this folder holds its own copy as real Zero-1-to-3 folders do.
- UNet: {s["unet_parameters"] / 1e6:.2f} M parameters on the latents, 8 input channels;
  channels {"/".join(map(str, s["unet_channels"]))}, one ResNet block per level, cross-attention
  at 8x8, 4x4 and in the middle (`threestudio.bundled.latent_model.build_latent_unet`).
- Image encoder: CLIP vision transformer, 32x32 input, 8 px patches, 2 layers, width 64,
  projection {s["width"]} ({s["image_encoder_parameters"] / 1e3:.0f} k parameters);
  `cc_projection`: one linear layer {s["width"] + 4} -> {s["width"]}. Trained jointly with the
  UNet from scratch ({n_params / 1e6:.2f} M trained parameters in all).
- Stable Diffusion's schedule (scaled-linear betas 0.00085 to 0.012, 1000 steps), epsilon
  prediction with min-SNR-5 weighting; 10% of the pairs unconditional (both inputs zeroed);
  AdamW lr {s["lr"]}, warm-up then cosine decay, batch {s["batch_size"]}, {s["steps"]} steps,
  EMA 0.999 (the EMA weights are shipped). Final training loss {s["final_loss"]:.4f}.
- Training time: {s["training_seconds"] / 60:.1f} min, {s["render_seconds"]} s rendering
  ({s["machine"]}, load average {s["load_average"]:.1f}: the machine was shared).

Rebuild from scratch (seeded; needs `load/tiny-shapes-sd/vae`):

    {s["command"].strip()}

## Samples
Ancestral (DDPM) sampling, {s["sample_steps"]} steps, guidance scale
{s["sample_guidance_scale"]} (`threestudio.bundled.novel_view_model.sample_novel_views`). Each
pair of rows: the conditioning image (left) and its novel views, with the ground-truth renders
of the same cameras below. The example images of `load/images/` ({examples}) are drawn at
azimuths {", ".join(f"{a:g}" for a in s["grid_azimuths"])}° (relative) for elevations
{", ".join(f"{e:g}" for e in s["grid_elevations"])}° (absolute; the ground truth is lit like the
examples, light above and to the right of the camera); then held-out renders at the cameras of
other views of the same instance (their ground truth is lit by the random light of the data).

![samples](samples.png)

Over {s["samples_scored"]} samples ({s["sample_seeds"]} seeds per view), the world's classifier
(`load/tiny-shapes/classifier`) names shape and colour correctly for
{100 * s["sample_accuracy_examples"]:.0f}% of the example images' novel views and
{100 * s["sample_accuracy_heldout"]:.0f}% of the held-out renders'. A sample is closer (mean
squared error) to the ground truth of its own camera than to the mean of the other cameras' for
{100 * s["closer_to_own_camera"]:.0f}% of them (error {s["mse_to_own_camera"]:.4f} to its own
camera against {s["mse_to_other_cameras"]:.4f} to the others).

## Limits
It knows one object at a time from its world, 32x32, at distance about 3.8 and field of view
20°: other distances and lenses, several objects or real photographs are outside what it saw.
Shading is that of the renders; the light of a novel view is a guess (the data's light moves
with the camera). It exists so that the Zero-1-to-3-based methods run honestly on a CPU, not to
compete with real models.
"""
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
