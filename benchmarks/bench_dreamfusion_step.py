"""Median DreamFusion step time, split into render forward, guidance forward, backward and the
rest (the framework's own overhead: camera sampling, Updateable hooks, loss bookkeeping, the
optimiser step).

    python benchmarks/bench_dreamfusion_step.py --device cpu            # tiny random SD, 64x64
    python benchmarks/bench_dreamfusion_step.py --device cuda --sd21    # SD 2.1-base architecture, fp16

The models have random weights: speed does not depend on their values. The step is driven the
way Lightning drives it (training_step, backward, optimiser step, update hooks), without a
Trainer so that each phase can be timed.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import threestudio  # noqa: E402
from threestudio.utils.config import load_config  # noqa: E402
from threestudio.utils.paths import REPO_ROOT  # noqa: E402


def build_models(root: Path, sd21: bool) -> str:
    from tests.tiny_pipelines import build_tiny_sd
    from tests.tiny_text import make_tiny_clip_text

    if not sd21:
        build_tiny_sd(root)
        make_tiny_clip_text(root)
        return str(root)
    # Stable Diffusion 2.1-base's published architecture with random weights
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=1024,
        attention_head_dim=[5, 10, 20, 20],
        use_linear_projection=True,
    ).save_pretrained(root / "unet")
    AutoencoderKL(
        block_out_channels=[128, 256, 512, 512],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        sample_size=512,
        layers_per_block=2,
    ).save_pretrained(root / "vae")
    DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
    ).save_pretrained(root / "scheduler")
    make_clip = __import__("tests.tiny_text", fromlist=["make_tiny_clip_text"]).make_tiny_clip_text
    make_clip(root, hidden_size=1024)
    return str(root)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sd21", action="store_true", help="SD 2.1-base architecture (GPU)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        model = build_models(Path(tmp) / "model", args.sd21)
        os.environ["THREESTUDIO_CACHE_DIR"] = str(Path(tmp) / "cache")
        cfg = load_config(
            os.path.join(REPO_ROOT, "configs", "dreamfusion-sd.yaml"),
            cli_args=[
                "system.prompt_processor.prompt=a hamburger",
                f"system.prompt_processor.pretrained_model_name_or_path={model}",
                f"system.guidance.pretrained_model_name_or_path={model}",
                "system.prompt_processor.spawn=false",
                f"system.guidance.half_precision_weights={args.device == 'cuda'}",
                f"data.width={args.resolution}",
                f"data.height={args.resolution}",
            ],
        )
        torch.manual_seed(0)
        dm = threestudio.find(cfg.data_type)(cfg.data)
        dm.setup("fit")
        system = threestudio.find(cfg.system_type)(cfg.system).to(device)
        system.set_save_dir(str(Path(tmp) / "save"))
        system.log = lambda *a, **k: None  # no Trainer: logging is a no-op here
        system.on_fit_start()
        optimizer = system.configure_optimizers()["optimizer"]
        dataset = dm.train_dataset

        phases = {"render": [], "guidance": [], "backward": [], "total": []}
        renderer_forward = system.renderer.forward
        guidance_call = system.guidance.__call__

        def timed(name, fn):
            def wrapper(*a, **k):
                sync(device)
                t0 = time.perf_counter()
                out = fn(*a, **k)
                sync(device)
                current[name] = time.perf_counter() - t0
                return out

            return wrapper

        current = {}
        system.renderer.forward = timed("render", renderer_forward)
        guidance = system.guidance
        system.guidance = type(
            "Timed", (), {"__call__": staticmethod(timed("guidance", guidance_call))}
        )()
        system.renderer.train()
        for step in range(args.warmup + args.steps):
            sync(device)
            t0 = time.perf_counter()
            batch = dataset.collate(None)
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            guidance.do_update_step(0, step)
            system.do_update_step(0, step)
            loss = system.training_step(batch, step)["loss"]
            sync(device)
            t1 = time.perf_counter()
            loss.backward()
            sync(device)
            current["backward"] = time.perf_counter() - t1
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            system.do_update_step_end(0, step)
            sync(device)
            current["total"] = time.perf_counter() - t0
            if step >= args.warmup:
                for k in phases:
                    phases[k].append(current[k])

    med = {k: statistics.median(v) * 1000 for k, v in phases.items()}
    other = med["total"] - med["render"] - med["guidance"] - med["backward"]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(
        f"device: {name}; model: {'SD 2.1-base architecture' if args.sd21 else 'tiny random SD'}; "
        f"{args.resolution}x{args.resolution}, median of {args.steps} warm steps"
    )
    for k in ("render", "guidance", "backward"):
        print(f"  {k:<10} {med[k]:8.1f} ms")
    print(
        f"  {'other':<10} {other:8.1f} ms  ({100 * other / med['total']:.1f} % of the step: framework overhead)"
    )
    print(f"  {'step':<10} {med['total']:8.1f} ms  ({1000 / med['total']:.2f} it/s)")


if __name__ == "__main__":
    main()
