"""Rebuilds the bundled tiny text-to-image model (``load/tiny-shapes``) from scratch on a CPU.

    python scripts/train_tiny_model.py                 # data, classifier, diffusion model, card
    python scripts/train_tiny_model.py --steps 200     # a quick, worse model (for trying it out)

1. renders the synthetic world (``threestudio.bundled.shapes``): views of 5 shapes x 6 colours;
2. trains the shape-and-colour classifier and measures it on held-out renders;
3. trains the pixel-space diffusion model (T5 text encoder + UNet, jointly, from scratch);
4. samples every prompt, scores the samples with the classifier, and writes the pipeline folder,
   a sample grid and the model card (README.md) with every figure measured on the way.
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

from threestudio.bundled import tiny_model as bm  # noqa: E402
from threestudio.bundled.building import folder_size_mb, rendered, save_grid  # noqa: E402
from threestudio.bundled.classifier import (  # noqa: E402
    ShapeColorClassifier,
    classifier_accuracy,
    train_classifier,
)
from threestudio.bundled.shapes import (  # noqa: E402
    CAMERA_CONFIG,
    COLORS,
    SHADING,
    SHAPES,
    all_prompts,
    known_words,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default=bm.BUNDLED_MODEL_PATH, help="pipeline folder to write")
    p.add_argument("--work-dir", default="outputs/tiny-shapes-build", help="rendered data cache")
    p.add_argument("--views-per-object", type=int, default=640)
    p.add_argument("--heldout-views-per-object", type=int, default=32)
    p.add_argument("--size", type=int, default=32, help="image size in pixels")
    p.add_argument("--steps", type=int, default=4000, help="diffusion training steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--classifier-epochs", type=int, default=3)
    p.add_argument("--sample-seeds", type=int, default=4, help="samples per prompt for the card")
    p.add_argument("--guidance-scale", type=float, default=3.0)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument(
        "--resample",
        action="store_true",
        help="keep the trained model in --out; redo only the samples and the card",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resample:
        tokenizer, text_encoder, unet, scheduler, classifier, stats = load_built(args.out)
        train = rendered(args.work_dir, "train", args.views_per_object, args.size, args.seed)
    else:
        train, classifier, tokenizer, text_encoder, unet, scheduler, stats = build(args, argv)

    # 4. samples, scored by the classifier
    prompts = all_prompts()
    cond = bm.encode_prompts(tokenizer, text_encoder, prompts)
    uncond = bm.encode_prompts(tokenizer, text_encoder, [""])
    samples = []
    for s in range(args.sample_seeds):
        samples.append(
            bm.sample_images(
                unet, scheduler, cond, uncond, args.guidance_scale, args.sample_steps, seed=s
            )
        )
    samples = torch.stack(samples, 1)  # [prompt, seed, H, W, 3]
    with torch.no_grad():
        log_probs = classifier.prompt_log_probs(samples.flatten(0, 1))
    target = torch.arange(len(prompts)).repeat_interleave(args.sample_seeds)
    sample_accuracy = (log_probs.argmax(-1) == target).float().mean().item()
    # one row per colour: its 5 shapes x seeds side by side
    grid = samples.reshape(len(COLORS), len(SHAPES) * args.sample_seeds, args.size, args.size, 3)
    save_grid(grid.flatten(0, 1), len(COLORS), os.path.join(args.out, "samples.png"))
    save_grid(
        train.images[:: args.views_per_object][: len(prompts)].float() / 255.0,
        len(COLORS),
        os.path.join(args.out, "training_examples.png"),
        scale=3,
    )

    stats.update(
        sample_accuracy=sample_accuracy,
        sample_guidance_scale=args.guidance_scale,
        sample_steps=args.sample_steps,
        sample_seeds=args.sample_seeds,
    )
    stats["size_mb"] = round(folder_size_mb(args.out), 2)
    with open(os.path.join(args.out, "training_stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    write_card(args.out, stats)
    print(json.dumps(stats, indent=1))


def build(args, argv):
    """Steps 1-3: data, classifier, diffusion model; writes the pipeline and the classifier."""
    t_start = time.time()
    # 1. data
    t0 = time.time()
    train = rendered(args.work_dir, "train", args.views_per_object, args.size, args.seed)
    heldout = rendered(
        args.work_dir, "heldout", args.heldout_views_per_object, args.size, args.seed + 1000
    )
    t_data = time.time() - t0
    print(f"data: {len(train)} training and {len(heldout)} held-out renders ({t_data:.0f} s)")

    # 2. classifier
    t0 = time.time()
    classifier = train_classifier(train, epochs=args.classifier_epochs, seed=args.seed)
    clf_metrics = classifier_accuracy(classifier, heldout)
    t_clf = time.time() - t0
    print(f"classifier on held-out renders: {clf_metrics} ({t_clf:.0f} s)")

    # 3. diffusion model
    t0 = time.time()
    tokenizer, text_encoder, unet, scheduler, history = bm.train_diffusion(
        train, args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    t_train = time.time() - t0
    os.makedirs(args.out, exist_ok=True)
    bm.save_pipeline(args.out, tokenizer, text_encoder, unet, scheduler)
    classifier.save(os.path.join(args.out, "classifier"), {"heldout": clf_metrics})
    stats = {
        "training_images": len(train),
        "image_size": args.size,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "final_loss": sum(history[-100:]) / len(history[-100:]),
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "text_encoder_parameters": sum(p.numel() for p in text_encoder.parameters()),
        "render_seconds": round(t_data),
        "classifier_seconds": round(t_clf),
        "diffusion_training_seconds": round(t_train),
        "total_seconds": round(time.time() - t_start),
        "classifier_heldout": clf_metrics,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}",
        "command": "python scripts/train_tiny_model.py " + " ".join(argv or sys.argv[1:]),
    }
    return train, classifier, tokenizer, text_encoder, unet, scheduler, stats


def load_built(folder: str):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import T5EncoderModel, T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = T5EncoderModel.from_pretrained(folder, subfolder="text_encoder").eval()
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    classifier = ShapeColorClassifier.load(os.path.join(folder, "classifier"))
    with open(os.path.join(folder, "training_stats.json")) as f:
        stats = json.load(f)
    return tokenizer, text_encoder, unet, scheduler, classifier, stats


def write_card(folder: str, s: dict) -> None:
    minutes = s["diffusion_training_seconds"] / 60
    clf = s["classifier_heldout"]
    text = f"""# tiny-shapes: the bundled text-to-image model

A DeepFloyd-IF-style pixel-space diffusion model at {s["image_size"]}x{s["image_size"]}, small
enough to ship ({s["size_mb"]} MB) and to guide text-to-3D on a laptop CPU. It knows one toy
world: five shapes in six colours, seen from any side. `configs/quickstart.yaml` uses it.

It is a real diffusers `IFPipeline` folder (T5 tokenizer and encoder, `UNet2DConditionModel`,
`DDPMScheduler`), so `deep-floyd-guidance` and `deep-floyd-prompt-processor` load it through
`pretrained_model_name_or_path: load/tiny-shapes`, as they load `DeepFloyd/IF-I-XL-v1.0`.

## Words it knows
{", ".join(known_words())}

Prompts are "a <colour> <shape>", with the view words the prompt processor adds
("a red cube, front view"). Colours: {", ".join(COLORS)}. Shapes: {", ".join(SHAPES)}.
A prompt with any other word gets a warning listing these words: the model has never seen it.

## Data
{s["training_images"]} renders ({s["training_images"] // 30} per object), made by
`threestudio.bundled.shapes.render_shape_dataset`: meshes of the shapes rasterised by the project's
`nvdiff-rasterizer` (pure-PyTorch backend), shaded by `diffuse-with-point-light-material`
(ambient {SHADING["ambient_light_color"][0]}, diffuse {SHADING["diffuse_light_color"][0]}) under
a point light drawn as the random-camera datamodule draws it, on a white background. Cameras:
elevation {CAMERA_CONFIG["elevation_range"]} deg, distance {CAMERA_CONFIG["camera_distance_range"]},
field of view {CAMERA_CONFIG["fovy_range"]} deg, all azimuths. Each batch of 16 views shares a
scale in [0.85, 1.15] and an albedo jittered by 0.04.
Captions: the view-dependent prompt for the camera (70%), the plain prompt (20%), empty (10%,
for classifier-free guidance).

![training examples](training_examples.png)

## Recipe
- UNet: {s["unet_parameters"] / 1e6:.2f} M parameters; channels 32/64/96, one ResNet block per
  level, cross-attention at 8x8 and in the middle, pooled text added to the time embedding.
- Text encoder: T5, 2 layers, d_model 64 ({s["text_encoder_parameters"] / 1e3:.0f} k
  parameters), trained jointly from scratch; 77 tokens as the prompt processor pads them.
- Cosine noise schedule, 1000 steps, epsilon prediction with min-SNR-5 weighting; AdamW lr
  {s["lr"]}, warm-up then cosine decay, batch {s["batch_size"]}, {s["steps"]} steps, EMA 0.999
  (the EMA weights are shipped). Final training loss {s["final_loss"]:.4f}.
- Training time: {minutes:.1f} min for the diffusion model, {s["classifier_seconds"]} s for the
  classifier, {s["render_seconds"]} s rendering ({s["machine"]}).

Rebuild from scratch (seeded):

    {s["command"].strip()}

## Samples
Ancestral (DDPM) sampling, {s["sample_steps"]} steps, guidance scale {s["sample_guidance_scale"]},
seeds 0-{s["sample_seeds"] - 1} (`threestudio.bundled.tiny_model.sample_images`); one
row per colour, shapes in the order {", ".join(SHAPES)}:

![samples](samples.png)

The bundled classifier names shape and colour correctly for
{100 * s["sample_accuracy"]:.0f}% of these samples.

## Classifier (`classifier/`)
A small CNN naming shape and colour, trained on the same renders; used by
`python -m threestudio.bundled.evaluation` for R-precision in this world. On
{30 * 32} held-out renders: shape {100 * clf["shape_accuracy"]:.1f}%, colour
{100 * clf["color_accuracy"]:.1f}%, both {100 * clf["accuracy"]:.1f}%.

## Limits
It draws nothing outside its world, at 32x32, and its shading and backgrounds are those of the
renders above. It exists so that the whole text-to-3D pipeline runs honestly on a CPU, not to
compete with real models.
"""
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
