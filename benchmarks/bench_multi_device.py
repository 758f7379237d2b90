"""Step time on 1 and on N processes with the same per-device batch (Lightning's ddp strategy).

Runs ``configs/quickstart.yaml`` through ``launch.py`` (as a user would) once per process count,
on the CPU (``trainer.accelerator=cpu trainer.devices=N``, the ranks joined by gloo; one thread
per process, so a "device" is one core) or on GPUs (``--gpu 0,1``), and reads the step times
from the trial's TensorBoard events (the wall time of each logged step). Prints one line per
process count: median step time, views per step (processes x data.batch_size) and views per
second.

    python benchmarks/bench_multi_device.py                    # 1 and 2 CPU processes
    python benchmarks/bench_multi_device.py --processes 1 2 4 --steps 60 --batch-size 2
    python benchmarks/bench_multi_device.py --gpu 0,1          # 1 GPU (0), then both
"""

import argparse
import glob
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from threestudio.utils.paths import REPO_ROOT  # noqa: E402


def step_times(trial: str, skip: int):
    """Seconds between consecutive logged training steps (the first ``skip`` left out: start-up)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events_dir,) = glob.glob(os.path.join(trial, "tb_logs", "version_*"))
    acc = EventAccumulator(events_dir)
    acc.Reload()
    events = sorted(acc.Scalars("train/loss"), key=lambda e: e.step)
    walls = [e.wall_time for e in events]
    return [b - a for a, b in zip(walls, walls[1:])][skip:]


def run(n: int, args, root: str):
    if args.gpu:
        devices = ["--gpu", ",".join(args.gpu.split(",")[:n])]
    else:
        devices = ["trainer.accelerator=cpu", f"trainer.devices={n}"]
    cmd = [
        sys.executable, os.path.join(REPO_ROOT, "launch.py"),
        "--config", os.path.join(REPO_ROOT, "configs", "quickstart.yaml"), "--train", *devices,
        f"system.prompt_processor.prompt={args.prompt}", f"exp_root_dir={root}", f"tag=p{n}",
        f"trainer.max_steps={args.steps}", "trainer.log_every_n_steps=1",
        f"trainer.val_check_interval={args.steps}", f"data.batch_size={args.batch_size}",
        "data.n_test_views=4", "system.export_after_train=false",
        "trainer.enable_progress_bar=false", *args.overrides,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"{n} process(es) failed:\n{proc.stderr[-3000:]}")
    (trial,) = glob.glob(os.path.join(root, "quickstart", f"p{n}@*"))
    times = step_times(trial, args.skip)
    # the last logged step also waits for the end-of-fit checkpoint: leave it out
    return statistics.median(times[:-1]), min(times[:-1]), wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=5, help="first steps left out (warm-up)")
    p.add_argument("--batch-size", type=int, default=4, help="data.batch_size: per device")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each process")
    p.add_argument("--gpu", default="", help="GPU indices; empty: CPU processes")
    p.add_argument("--prompt", default="a red sphere")
    p.add_argument("overrides", nargs="*", help="extra config overrides, after --")
    args = p.parse_args()

    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
        f"{'GPUs ' + args.gpu if args.gpu else f'CPU, {args.threads} thread(s) per process'}, "
        f"quickstart, data.batch_size={args.batch_size} per device, {args.steps} steps"
    )
    print("| processes | views/step | median step | fastest step | views/s | launch wall |")
    print("|---|---|---|---|---|---|")
    base = None
    with tempfile.TemporaryDirectory() as root:
        for n in args.processes:
            median, fastest, wall = run(n, args, root)
            views = n * args.batch_size
            rate = views / median
            base = base or rate
            print(
                f"| {n} | {views} | {median * 1000:.0f} ms | {fastest * 1000:.0f} ms | "
                f"{rate:.1f} ({rate / base:.2f}x) | {wall:.0f} s |",
                flush=True,
            )
    print(f"# load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
