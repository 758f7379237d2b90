"""Quality and time of the main job: runs ``configs/quickstart.yaml`` for a set of the bundled
world's prompts (through ``launch.py``, as a user would), then scores each trial's test views with
the bundled classifier (R-precision over the 30 prompts).

    python benchmarks/bench_quickstart.py                       # all 30 prompts, seed 0
    python benchmarks/bench_quickstart.py --prompts 12 --seeds 0 1 2
    python benchmarks/bench_quickstart.py --prompts 2 -- trainer.max_steps=300   # extra overrides

Prints one line per run and a summary, and writes a markdown table (``--out``).
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--prompts", type=int, default=30, help="how many of the 30 prompts")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--exp-root", default="outputs/bench-quickstart")
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "benchmarks", "results_quickstart.md"))
    p.add_argument("overrides", nargs="*", help="extra config overrides, after --")
    args = p.parse_args()

    scorer = ClassifierScorer()
    rows = []
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
                rows.append((prompt, seed, wall, float("nan"), "failed", float("nan")))
                continue
            trial = sorted(
                glob.glob(os.path.join(REPO_ROOT, args.exp_root, "quickstart", tag + "@*"))
            )[-1]
            r = evaluate_trial(trial, scorer)
            best = next(iter(r["top_prompts"]))
            rows.append((prompt, seed, wall, r["r_precision"], best, r["confidence"]))
            print(f"{prompt:20s} seed {seed}: {wall:6.1f} s  R-precision {r['r_precision']:.3f}"
                  f"  confidence {r['confidence']:.3f}  (most views: {best})", flush=True)  # fmt: skip

    done = [r for r in rows if r[4] != "failed"]
    mean_r = sum(r[3] for r in done) / max(1, len(done))
    hit = sum(r[4] == r[0] for r in done) / max(1, len(done))
    walls = [r[2] for r in done]
    weakest = min(done, key=lambda r: r[5], default=None)
    summary = (
        f"{len(done)} runs ({len(rows) - len(done)} failed): mean R-precision {mean_r:.3f} "
        f"(views), {100 * hit:.0f}% of runs read as their prompt by most views; wall time "
        f"median {statistics.median(walls) if walls else 0:.0f} s, mean "
        f"{sum(walls) / max(1, len(walls)):.0f} s, min {min(walls, default=0):.0f} s, "
        f"max {max(walls, default=0):.0f} s"
    )
    if weakest is not None:
        summary += (
            f"; the classifier's confidence in the right shape and colour (mean over a run's "
            f"views): lowest {weakest[5]:.3f} ({weakest[0]}, seed {weakest[1]}), mean "
            f"{sum(r[5] for r in done) / len(done):.3f}"
        )
    print(summary)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    lines = [
        "# Quickstart benchmark (`benchmarks/bench_quickstart.py`)",
        "",
        f"Machine: {machine}. Overrides: {' '.join(args.overrides) or 'none'}.",
        "",
        summary,
        "",
        "| prompt | seed | wall s | R-precision | confidence | most views read as |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c:.0f} | {d:.3f} | {f:.3f} | {e} |" for a, b, c, d, e, f in rows]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
