"""What one launch for many prompts saves: the same N prompts of the bundled world run as N
separate ``launch.py --train`` launches, then as one launch with ``--prompts FILE``; prints both
wall times (each launch included: Python, torch and Lightning start-up, model loads, text
encoding, training, test video, export) and the saving.

    python benchmarks/bench_batch_prompts.py                  # 3 prompts, 2 steps, tiny sizes, 2 rounds
    python benchmarks/bench_batch_prompts.py --prompts 5 --steps 50 --rounds 1

Each variant starts from an empty text-embedding cache (its own folder), so both encode every
prompt. Rounds alternate which variant runs first. Writes a markdown table with ``--out``.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from threestudio.bundled.shapes import all_prompts  # noqa: E402
from threestudio.utils.paths import REPO_ROOT  # noqa: E402

TINY = [
    "trainer.enable_progress_bar=false", "data.width=16", "data.height=16",
    "data.eval_width=16", "data.eval_height=16", "data.n_val_views=1", "data.n_test_views=2",
    "system.geometry.pos_encoding_config.n_levels=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
    "system.geometry.isosurface_resolution=32", "system.exporter.texture_size=64",
    "system.renderer.num_samples_per_ray=32",
]  # fmt: skip


def launch(args, env, cwd) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "launch.py"), *args],
        env=env, cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"launch failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--prompts", type=int, default=3, help="how many prompts (of the 30)")
    p.add_argument("--steps", type=int, default=2, help="trainer.max_steps of each trial")
    p.add_argument("--config", default=os.path.join(REPO_ROOT, "configs", "quickstart.yaml"))
    p.add_argument("--rounds", type=int, default=2, help="rounds, alternating which goes first")
    p.add_argument("--out", default=None, help="write the markdown table here")
    p.add_argument("overrides", nargs="*", help="extra overrides for every launch (after --)")
    args = p.parse_args()

    prompts = all_prompts()[: args.prompts]
    common = ["--config", args.config, "--train", f"trainer.max_steps={args.steps}", *TINY]
    common += args.overrides
    rounds = []
    for r in range(args.rounds):
        # alternate which variant goes first, so a change of the host's load hits both
        order = ("separate", "batch") if r % 2 == 0 else ("batch", "separate")
        times = {}
        for variant in order:
            with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
                times[variant] = run_variant(variant, prompts, common, tmp)
        rounds.append(times)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"{len(prompts)} prompts x 1 seed, {args.steps} steps each, tiny sizes; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load:.1f} at the end",
        "",
        "| round (first variant) | separate launches, wall (s) | one batch launch, wall (s) | saving |",
        "|---|---|---|---|",
    ]
    for r, times in enumerate(rounds):
        total, batched = sum(times["separate"]), times["batch"]
        first = "separate" if r % 2 == 0 else "batch"
        lines.append(
            f"| {r + 1} ({first}) | {total:.1f} ({' + '.join(f'{t:.1f}' for t in times['separate'])})"
            f" | {batched:.1f} | {total - batched:.1f} s ({100 * (total - batched) / total:.0f} %) |"
        )
    totals = [sum(t["separate"]) for t in rounds]
    batches = [t["batch"] for t in rounds]
    saving = sum(totals) - sum(batches)
    lines += [
        "",
        f"mean saving: {saving / len(rounds):.1f} s per batch of {len(prompts)} "
        f"({100 * saving / sum(totals):.0f} % of the separate launches)",
    ]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


def run_variant(variant: str, prompts, common, tmp: str):
    """Seconds of each separate launch (a list) or of the one batch launch."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, HF_HUB_OFFLINE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["THREESTUDIO_CACHE_DIR"] = os.path.join(tmp, "cache")  # empty: both encode every prompt
    if variant == "separate":
        times = []
        for prompt in prompts:
            overrides = [f"system.prompt_processor.prompt={prompt}", f"exp_root_dir={tmp}/out"]
            times.append(launch([*common, *overrides], env, tmp))
            print(f"separate launch [{prompt}]: {times[-1]:.1f} s", flush=True)
        return times
    prompt_file = os.path.join(tmp, "prompts.txt")
    with open(prompt_file, "w") as f:
        f.write("\n".join(prompts) + "\n")
    seconds = launch([*common, "--prompts", prompt_file, f"exp_root_dir={tmp}/out"], env, tmp)
    print(f"one batch launch of {len(prompts)} prompts: {seconds:.1f} s", flush=True)
    exp = os.path.join(tmp, "out", "quickstart")
    n_trials = sum(os.path.isdir(os.path.join(exp, d)) for d in os.listdir(exp))
    assert n_trials == len(prompts), f"the batch made {n_trials} trials"
    return seconds


if __name__ == "__main__":
    main()
