"""Quality and time of the main job: runs ``configs/quickstart.yaml`` for a set of the bundled
world's prompts (through ``launch.py``, as a user would), then scores each trial's test views with
the bundled classifier (R-precision over the 30 prompts).

    python benchmarks/bench_quickstart.py                       # all 30 prompts, seed 0
    python benchmarks/bench_quickstart.py --prompts 12 --seeds 0 1 2
    python benchmarks/bench_quickstart.py --prompts 2 -- trainer.max_steps=300   # extra overrides
    python benchmarks/bench_quickstart.py --trials outputs/quickstart/*@*   # score made trials

Per run: R-precision, the classifier's confidence in the right shape and colour (mean and lowest
view) and the share of views whose object stays inside the frame. Prints one line per run and
writes a markdown table with a summary (``--out``) after every run.
"""

import argparse
import glob
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from threestudio.bundled.evaluation import ClassifierScorer, evaluate_trial  # noqa: E402
from threestudio.bundled.shapes import spread_prompts  # noqa: E402
from threestudio.utils.paths import REPO_ROOT  # noqa: E402
from threestudio.utils.typing import List, Optional  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--prompts", type=int, default=30, help="how many of the 30 prompts")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--exp-root", default="outputs/bench-quickstart")
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "benchmarks", "results_quickstart.md"))
    p.add_argument(
        "--trials", nargs="+", default=None, help="score these trial folders instead of running"
    )
    p.add_argument("overrides", nargs="*", help="extra config overrides, after --")
    args = p.parse_args()

    for trial in args.trials or []:
        if not os.path.isfile(os.path.join(trial, "configs", "parsed.yaml")):
            sys.exit(f"[ERROR] --trials: {trial} has no configs/parsed.yaml; is it a trial folder?")
    scorer = ClassifierScorer()
    rows: List[dict] = []
    if args.trials:  # score trials made elsewhere (e.g. one launch with --prompts)
        for trial in args.trials:
            rows.append(score(trial, scorer, None))
            write_table(args, rows)
        return
    for prompt in spread_prompts(args.prompts):
        for seed in args.seeds:
            tag = f"{prompt.replace(' ', '_')}_s{seed}"
            cmd = [
                sys.executable, "launch.py", "--config", "configs/quickstart.yaml", "--train",
                f"system.prompt_processor.prompt={prompt}", f"seed={seed}",
                f"exp_root_dir={args.exp_root}", f"tag={tag}", *args.overrides,
            ]  # fmt: skip
            t0 = time.time()
            proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
            wall = time.time() - t0
            if proc.returncode != 0:
                print(f"{prompt} seed {seed}: FAILED\n{proc.stderr[-2000:]}")
                rows.append({"prompt": prompt, "seed": seed, "wall": wall, "failed": True})
            else:
                trial = sorted(
                    glob.glob(os.path.join(REPO_ROOT, args.exp_root, "quickstart", tag + "@*"))
                )[-1]
                rows.append(score(trial, scorer, wall))
            write_table(args, rows)


def score(trial: str, scorer, wall: Optional[float]) -> dict:
    """One run's row: R-precision, the classifier's confidence and the share of views with the
    object inside the frame (``threestudio.bundled.evaluation``)."""
    from omegaconf import OmegaConf

    r = evaluate_trial(trial, scorer)
    seed = OmegaConf.load(os.path.join(trial, "configs", "parsed.yaml")).get("seed")
    row = {
        "prompt": r["prompt"], "seed": seed, "wall": wall, "r_precision": r["r_precision"],
        "read_as": next(iter(r["top_prompts"])), "confidence": r["confidence"],
        "min_view_confidence": r["min_view_confidence"], "in_frame": r.get("in_frame"),
    }  # fmt: skip
    wall_text = "-" if wall is None else f"{wall:.1f} s"
    print(f"{row['prompt']:20s} seed {seed}: {wall_text:>8s}  R-precision "
          f"{row['r_precision']:.3f}  confidence {row['confidence']:.3f}  in frame "
          f"{fmt_share(row['in_frame'])}  (most views: {row['read_as']})", flush=True)  # fmt: skip
    return row


def fmt_share(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def write_table(args, rows: List[dict]) -> None:
    """The summary and per-run table of ``rows`` so far, written atomically to ``args.out``."""
    done = [r for r in rows if not r.get("failed")]
    mean_r = sum(r["r_precision"] for r in done) / max(1, len(done))
    hit = sum(r["read_as"] == r["prompt"] for r in done) / max(1, len(done))
    walls = [r["wall"] for r in done if r["wall"] is not None]
    summary = (
        f"{len(done)} runs ({len(rows) - len(done)} failed): mean R-precision {mean_r:.3f} "
        f"(views), {100 * hit:.0f}% of runs read as their prompt by most views"
    )
    if walls:
        summary += (
            f"; wall time median {statistics.median(walls):.0f} s, mean "
            f"{sum(walls) / len(walls):.0f} s, min {min(walls):.0f} s, max {max(walls):.0f} s"
        )
    if done:
        weakest = min(done, key=lambda r: r["confidence"])
        framed = [r["in_frame"] for r in done if r["in_frame"] is not None]
        summary += (
            f". The classifier's confidence in the right shape and colour (its probability of "
            f"the prompt among the 30, mean over a run's views): lowest {weakest['confidence']:.3f}"
            f" ({weakest['prompt']}, seed {weakest['seed']}), mean "
            f"{sum(r['confidence'] for r in done) / len(done):.3f}"
        )
        if framed:
            summary += (
                f". Views with the whole object inside the frame (opacity below 0.5 on the "
                f"border): {100 * sum(framed) / len(framed):.0f}% over the runs, lowest "
                f"{100 * min(framed):.0f}%"
            )
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    lines = [
        "# Quickstart benchmark (`benchmarks/bench_quickstart.py`)",
        "",
        f"Machine: {machine}. Overrides: {' '.join(args.overrides) or 'none'}.",
        "",
        summary + ".",
        "",
        "| prompt | seed | wall s | R-precision | confidence (mean, lowest view) | in frame "
        "| most views read as |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wall = "-" if r["wall"] is None else f"{r['wall']:.0f}"
        if r.get("failed"):
            lines.append(f"| {r['prompt']} | {r['seed']} | {wall} | failed | - | - | - |")
            continue
        lines.append(
            f"| {r['prompt']} | {r['seed']} | {wall} | {r['r_precision']:.3f} "
            f"| {r['confidence']:.3f}, {r['min_view_confidence']:.3f} "
            f"| {fmt_share(r['in_frame'])} | {r['read_as']} |"
        )
    with open(args.out + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
