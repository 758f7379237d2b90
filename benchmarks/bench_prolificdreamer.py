"""ProlificDreamer's three stages, one after the other as users run them: median step time and
peak memory of the coarse (NeRF + VSD), geometry (DMTet + normal-map SDS) and texture (fixed
DMTet + VSD) stages, each from the previous stage's trial folder.

    python benchmarks/bench_prolificdreamer.py --device cpu             # tiny random SD, 64x64
    python benchmarks/bench_prolificdreamer.py --device cuda --model stabilityai/stable-diffusion-2-1-base \\
        --resolution 512 --samples 512 --published-fields              # the published sizes

Each stage runs in a process of its own, so that its peak memory is its own: on CPU the peak
resident set (``ru_maxrss``: models, fields, activations, everything), on CUDA
``torch.cuda.max_memory_allocated``. With ``--model`` the prompt processor, the guidance and
(unless ``--model-lora`` names another) the LoRA copy use that model: the same name for both is
the memory lever of sharing one UNet's weights. The configs are the shipped ones
(configs/prolificdreamer{,-geometry,-texture}.yaml) with the sizes below overridden; the
step is driven as Lightning drives it (training_step, backward, optimiser step, update hooks)
without a Trainer, so that each step can be timed.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

STAGES = ("coarse", "geometry", "texture")
CONFIGS = {
    "coarse": "prolificdreamer",
    "geometry": "prolificdreamer-geometry",
    "texture": "prolificdreamer-texture",
}


def tiny_model(root: Path) -> str:
    from tests.tiny_pipelines import build_tiny_sd
    from tests.tiny_text import make_tiny_clip_text

    build_tiny_sd(root)
    make_tiny_clip_text(root)
    return str(root)


def overrides(args, stage: str, model: str, lora: str, previous) -> list:
    cli = [
        "system.prompt_processor.prompt=a pineapple",
        "system.prompt_processor.spawn=false",
        f"system.prompt_processor.pretrained_model_name_or_path={model}",
        f"system.guidance.pretrained_model_name_or_path={model}",
        f"system.guidance.half_precision_weights={args.device == 'cuda'}",
        f"data.width={args.resolution}",
        f"data.height={args.resolution}",
    ]
    if stage != "geometry":  # the geometry stage's guidance is plain SDS
        cli.append(f"system.guidance.pretrained_model_name_or_path_lora={lora}")
    if not args.published_fields:
        cli += [
            "system.geometry.pos_encoding_config.n_levels=8",
            "system.geometry.pos_encoding_config.log2_hashmap_size=15",
        ]
    if stage == "coarse":
        cli.append(f"system.renderer.num_samples_per_ray={args.samples}")
        # a few steps leave the density below the published threshold (25): the tet grid is
        # cut at the field's own level instead
        cli.append("system.geometry.isosurface_threshold=auto")
    else:
        cli += [
            f"system.geometry.isosurface_resolution={args.tet_resolution}",
            f"system.geometry_convert_from={previous}",
        ]
    return cli


def run_stage(args) -> dict:
    """One stage in this process; writes its trial folder for the next stage."""
    import torch

    import threestudio
    from threestudio.utils.config import dump_config, load_config

    device = torch.device(args.device)
    model = args.model or args.tiny_model
    lora = args.model_lora or model
    cfg = load_config(
        os.path.join(REPO, "configs", f"{CONFIGS[args.stage]}.yaml"),
        cli_args=overrides(args, args.stage, model, lora, args.previous),
    )
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    dm = threestudio.find(cfg.data_type)(cfg.data)
    dm.setup("fit")
    system = threestudio.find(cfg.system_type)(cfg.system).to(device)
    system.set_save_dir(os.path.join(args.trial, "save"))
    system.log = lambda *a, **k: None  # no Trainer: logging is a no-op here
    system.on_fit_start()
    system.on_train_start()
    system.to(device)
    optimizer = system.configure_optimizers()["optimizer"]
    dataset = dm.train_dataset

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for step in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        batch = dataset.collate(None)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        system.do_update_step(0, step)
        loss = system.training_step(batch, step)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        system.do_update_step_end(0, step)
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)

    trial = Path(args.trial)
    (trial / "configs").mkdir(parents=True, exist_ok=True)
    (trial / "ckpts").mkdir(exist_ok=True)
    dump_config(str(trial / "configs" / "parsed.yaml"), cfg)
    state = {"state_dict": system.state_dict(), "epoch": 0, "global_step": len(times)}
    torch.save(state, trial / "ckpts" / "last.ckpt")

    result = {"stage": args.stage, "step_ms": statistics.median(times) * 1000}
    # ru_maxrss is in KiB on Linux
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if args.stage != "coarse":
        mesh = system.geometry.isosurface()
        result["mesh_faces"] = int(mesh.t_pos_idx.shape[0])
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default=None, help="SD folder or name (default: tiny random)")
    parser.add_argument(
        "--model-lora", default=None, help="the LoRA copy's model (default: --model)"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=64, help="render size of every stage")
    parser.add_argument("--samples", type=int, default=128, help="coarse samples per ray")
    parser.add_argument("--tet-resolution", type=int, default=64, help="DMTet grid (published 128)")
    parser.add_argument(
        "--published-fields", action="store_true", help="hash grids at the published 16 x 2^19"
    )
    # internal: run one stage in this process
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    parser.add_argument("--previous", help=argparse.SUPPRESS)
    parser.add_argument("--tiny-model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.stage:
        Path(args.out).write_text(json.dumps(run_stage(args)))
        return

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, THREESTUDIO_CACHE_DIR=str(tmp / "cache"))
        tiny = None if args.model else tiny_model(tmp / "model")
        previous = None
        passed = [a for a in sys.argv[1:]]
        for stage in STAGES:
            trial, out = tmp / stage, tmp / f"{stage}.json"
            cmd = [sys.executable, os.path.abspath(__file__), *passed, "--stage", stage]
            cmd += ["--trial", str(trial), "--out", str(out)]
            if tiny:
                cmd += ["--tiny-model", tiny]
            if previous:
                cmd += ["--previous", str(previous)]
            subprocess.run(cmd, check=True, env=env)
            results.append(json.loads(out.read_text()))
            previous = trial / "ckpts" / "last.ckpt"

    import torch

    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    what = args.model or "tiny random SD"
    print(
        f"ProlificDreamer stages on {name}, {what}, {args.resolution}x{args.resolution}, "
        f"{args.samples} coarse samples/ray, tet grid {args.tet_resolution}, "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    print(
        "| stage | step (ms) | peak RSS (MiB) |"
        + (" peak CUDA (MiB) |" if args.device == "cuda" else "")
    )
    print("|---|---|---|" + ("---|" if args.device == "cuda" else ""))
    for r in results:
        row = f"| {r['stage']} | {r['step_ms']:.0f} | {r['peak_rss_mib']:.0f} |"
        if args.device == "cuda":
            row += f" {r['peak_cuda_mib']:.0f} |"
        print(row)


if __name__ == "__main__":
    main()
