"""Rebuilds the bundled latent text-to-image model (``load/tiny-shapes-sd``) from scratch on a CPU.

    python scripts/train_latent_model.py                # data, autoencoder, diffusion model, card
    python scripts/train_latent_model.py --steps 200    # a quick, worse model (for trying it out)

1. renders the synthetic world (``threestudio.bundled.shapes``; the cache is shared with
   ``scripts/train_tiny_model.py``);
2. trains the KL autoencoder (f = 2) and measures its reconstruction on held-out renders;
3. trains the latent diffusion model (CLIP text encoder + UNet, jointly, from scratch) on the
   autoencoder's latents;
4. samples every prompt, scores the samples with the world's classifier
   (``load/tiny-shapes/classifier``), and writes the Stable Diffusion folder, sample grids and
   the model card (README.md) with every figure measured on the way.
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

from threestudio.bundled import latent_model as lm  # noqa: E402
from threestudio.bundled.building import folder_size_mb, rendered, save_grid  # noqa: E402
from threestudio.bundled.classifier import ShapeColorClassifier  # noqa: E402
from threestudio.bundled.shapes import COLORS, SHAPES, all_prompts, known_words  # noqa: E402
from threestudio.bundled.tiny_model import BUNDLED_MODEL_PATH  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default=lm.LATENT_MODEL_PATH, help="pipeline folder to write")
    p.add_argument("--work-dir", default="outputs/tiny-shapes-build", help="rendered data cache")
    p.add_argument("--views-per-object", type=int, default=640)
    p.add_argument("--heldout-views-per-object", type=int, default=32)
    p.add_argument("--vae-steps", type=int, default=1200, help="autoencoder training steps")
    p.add_argument("--steps", type=int, default=3000, help="diffusion training steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--sample-seeds", type=int, default=4, help="samples per prompt for the card")
    p.add_argument("--guidance-scale", type=float, default=5.0)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument(
        "--classifier",
        default=os.path.join(BUNDLED_MODEL_PATH, "classifier"),
        help="the world's shape-and-colour classifier (trained by train_tiny_model.py)",
    )
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
    train = rendered(args.work_dir, "train", args.views_per_object, size, args.seed)
    heldout = rendered(
        args.work_dir, "heldout", args.heldout_views_per_object, size, args.seed + 1000
    )
    t_data = time.time() - t0
    print(f"data: {len(train)} training and {len(heldout)} held-out renders ({t_data:.0f} s)")

    # 2. autoencoder
    t0 = time.time()
    vae, vae_history = lm.train_vae(
        train, args.vae_steps, batch_size=args.batch_size, seed=args.seed
    )
    vae_error = lm.reconstruction_error(vae, heldout)
    t_vae = time.time() - t0
    print(f"autoencoder: held-out reconstruction error {vae_error:.4f} ({t_vae:.0f} s)")
    # saved at once: the novel-view model (scripts/train_novel_view_model.py) shares it
    vae.save_pretrained(os.path.join(args.out, "vae"))

    # 3. latent diffusion model
    t0 = time.time()
    tokenizer, text_encoder, unet, scheduler, history = lm.train_latent_diffusion(
        train, vae, args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    t_train = time.time() - t0
    os.makedirs(args.out, exist_ok=True)
    lm.save_sd_pipeline(args.out, tokenizer, text_encoder, vae, unet, scheduler)

    # 4. samples, scored by the classifier
    classifier = ShapeColorClassifier.load(args.classifier)
    prompts = all_prompts()
    cond = lm.encode_clip_prompts(tokenizer, text_encoder, prompts)
    uncond = lm.encode_clip_prompts(tokenizer, text_encoder, [""])
    samples = torch.stack(
        [
            lm.sample_latent_images(
                unet, vae, scheduler, cond, uncond, args.guidance_scale, args.sample_steps, seed=s
            )
            for s in range(args.sample_seeds)
        ],
        1,
    )  # [prompt, seed, H, W, 3]
    with torch.no_grad():
        log_probs = classifier.prompt_log_probs(samples.flatten(0, 1))
    target = torch.arange(len(prompts)).repeat_interleave(args.sample_seeds)
    sample_accuracy = (log_probs.argmax(-1) == target).float().mean().item()
    grid = samples.reshape(len(COLORS), len(SHAPES) * args.sample_seeds, size, size, 3)
    save_grid(grid.flatten(0, 1), len(COLORS), os.path.join(args.out, "samples.png"))
    # the autoencoder's reconstructions of held-out renders (top) under the renders (bottom)
    with torch.no_grad():
        x = heldout.images[:: args.heldout_views_per_object][:10]
        z = vae.encode(x.permute(0, 3, 1, 2).float() / 127.5 - 1).latent_dist.mean
        recon = (vae.decode(z).sample.permute(0, 2, 3, 1) * 0.5 + 0.5).clamp(0, 1)
    save_grid(
        torch.cat([x.float() / 255.0, recon]), 2, os.path.join(args.out, "autoencoder.png"), 3
    )

    stats = {
        "training_images": len(train),
        "image_size": size,
        "latent_size": unet.config.sample_size,
        "vae_steps": args.vae_steps,
        "vae_heldout_error": vae_error,
        "vae_scaling_factor": vae.config.scaling_factor,
        "vae_parameters": sum(p.numel() for p in vae.parameters()),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "final_loss": sum(history[-100:]) / len(history[-100:]),
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "text_encoder_parameters": sum(p.numel() for p in text_encoder.parameters()),
        "render_seconds": round(t_data),
        "vae_seconds": round(t_vae),
        "diffusion_training_seconds": round(t_train),
        "total_seconds": round(time.time() - t_start),
        "sample_accuracy": sample_accuracy,
        "sample_guidance_scale": args.guidance_scale,
        "sample_steps": args.sample_steps,
        "sample_seeds": args.sample_seeds,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}",
        "command": "python scripts/train_latent_model.py " + " ".join(argv or sys.argv[1:]),
    }
    stats["size_mb"] = round(folder_size_mb(args.out), 2)
    with open(os.path.join(args.out, "training_stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    write_card(args.out, stats)
    print(json.dumps(stats, indent=1))


def write_card(folder: str, s: dict) -> None:
    text = f"""# tiny-shapes-sd: the bundled latent text-to-image model

A Stable-Diffusion-style latent diffusion model of the bundled world (five shapes in six colours,
the world of `load/tiny-shapes`), small enough to ship ({s["size_mb"]} MB) and to guide
text-to-3D on a laptop CPU. The Stable-Diffusion recipes of `configs/bundled/` use it.

It is a real diffusers `StableDiffusionPipeline` folder (`CLIPTokenizer`, `CLIPTextModel`,
`AutoencoderKL`, `UNet2DConditionModel`, `DDPMScheduler`), so every Stable-Diffusion-based
guidance and prompt processor loads it through
`pretrained_model_name_or_path: load/tiny-shapes-sd`, as it loads
`stabilityai/stable-diffusion-2-1-base`: `stable-diffusion-guidance` (SDS, SJC),
`stable-diffusion-vsd-guidance` (ProlificDreamer, LoRA branch included),
`stable-diffusion-prompt-processor`, Latent-NeRF's latent renders and Fantasia3D's normal latents.

## Words it knows
{", ".join(known_words())}

Prompts are "a <colour> <shape>", with the view words the prompt processor adds
("a red cube, front view"). The tokenizer spells each of these words as one token; any other
word is spelt letter by letter and the prompt processor warns that the model never saw it.

## Data
The {s["training_images"]} renders of `load/tiny-shapes` (the same seeded renders, see its card),
{s["image_size"]}x{s["image_size"]}, white background, captions as there (view-dependent 70%,
plain 20%, empty 10%).

## Recipe
- Autoencoder: `AutoencoderKL` with one downsampling (f = 2), channels 32/64, 4 latent channels
  ({s["vae_parameters"] / 1e3:.0f} k parameters): {s["image_size"]}x{s["image_size"]} images,
  {s["latent_size"]}x{s["latent_size"]}x4 latents. Trained {s["vae_steps"]} steps (L1 + L2
  reconstruction, KL weight 1e-5); scaling factor {s["vae_scaling_factor"]:.4f} = 1 / std of the
  latents (as Stable Diffusion's 0.18215 was set). Held-out reconstruction error
  {s["vae_heldout_error"]:.4f} (mean absolute, 0-1 scale).

  ![autoencoder: renders (top), reconstructions (bottom)](autoencoder.png)
- UNet: {s["unet_parameters"] / 1e6:.2f} M parameters on the latents; channels 64/96/96, one
  ResNet block per level, cross-attention at 8x8, 4x4 and in the middle.
- Text encoder: CLIP, 2 layers, width 64 ({s["text_encoder_parameters"] / 1e3:.0f} k parameters),
  trained jointly from scratch; 77 tokens as the prompt processor pads them.
- Stable Diffusion's schedule (scaled-linear betas 0.00085 to 0.012, 1000 steps), epsilon
  prediction with min-SNR-5 weighting; AdamW lr {s["lr"]}, warm-up then cosine decay, batch
  {s["batch_size"]}, {s["steps"]} steps, EMA 0.999 (the EMA weights are shipped). Final training
  loss {s["final_loss"]:.4f}.
- Training time: {s["diffusion_training_seconds"] / 60:.1f} min for the diffusion model,
  {s["vae_seconds"]} s for the autoencoder, {s["render_seconds"]} s rendering ({s["machine"]}).

Rebuild from scratch (seeded):

    {s["command"].strip()}

## Samples
Ancestral (DDPM) sampling, {s["sample_steps"]} steps, guidance scale {s["sample_guidance_scale"]},
seeds 0-{s["sample_seeds"] - 1} (`threestudio.bundled.latent_model.sample_latent_images`); one
row per colour, shapes in the order {", ".join(SHAPES)}:

![samples](samples.png)

The world's classifier (`load/tiny-shapes/classifier`) names shape and colour correctly for
{100 * s["sample_accuracy"]:.0f}% of these samples.

## Limits
It draws nothing outside its world, at 32x32, and its shading and backgrounds are those of the
renders. It exists so that the Stable-Diffusion-based methods run honestly on a CPU, not to
compete with real models.
"""
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
