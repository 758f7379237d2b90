"""The method table: every bundled recipe (``configs/bundled/`` and the quickstart) over a fixed
set of the bundled world's prompts (text-to-3D) or conditioning images (image-to-3D) and seeds,
through ``launch.py`` as a user runs them; each trial's test views are scored by the bundled
classifier (R-precision among the 30 prompts).

    python benchmarks/bench_methods.py                           # every method, 12 inputs x 2 seeds
    python benchmarks/bench_methods.py --methods magic3d zero123 --inputs 4 --seeds 0
    python benchmarks/bench_methods.py --list                    # the methods and their stages

Per method: wall time (all stages), peak resident memory of the largest stage, mean R-precision
and the share of runs whose views most often read as their prompt; per run the same. Every
finished run is recorded in ``benchmarks/results_methods.json`` at once and a later call skips
the runs recorded there (``--rerun`` repeats them; a run whose recipe has changed since, as
parsed, is repeated too), so the table fills over several sittings.
Writes ``benchmarks/results_methods.md`` (``--out``) and a strip of test views per method and input into
``docs/images/methods/`` (``--images``) for the first seed. Image-to-3D inputs are rendered from
the world's meshes by ``scripts/make_example_images.py``'s renderer (reference camera elevation
20, distance 3.8, fovy 20, at world azimuth 30 so that a cube shows two faces, not one square
face a cylinder also shows; the methods call that view azimuth 0, and every other shape is
round about the vertical), so every method is scored on the same objects.
"""

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from threestudio.bundled.evaluation import (  # noqa: E402
    ClassifierScorer,
    evaluate_trial,
    find_test_views,
)
from threestudio.bundled.shapes import spread_prompts  # noqa: E402
from threestudio.utils.paths import REPO_ROOT  # noqa: E402
from threestudio.utils.typing import Dict, List, Optional, Tuple  # noqa: E402


@dataclass
class Method:
    family: str
    stages: List[str]  # configs/<stage>.yaml, run in order; each hands its ckpt to the next
    kind: str = "text"  # or "image"
    overrides: List[str] = field(default_factory=list)


METHODS: Dict[str, Method] = {
    "dreamfusion": Method("DreamFusion (SDS, pixel IF model)", ["quickstart"]),
    "magic3d": Method("Magic3D", ["bundled/magic3d-coarse", "bundled/magic3d-refine"]),
    "latentnerf": Method("Latent-NeRF", ["bundled/latentnerf"]),
    "fantasia3d": Method("Fantasia3D", ["bundled/fantasia3d", "bundled/fantasia3d-texture"]),
    "sjc": Method("SJC", ["bundled/sjc"]),
    "prolificdreamer": Method("ProlificDreamer (VSD)", ["bundled/prolificdreamer"]),
    "textmesh": Method("TextMesh", ["bundled/textmesh"]),
    "zero123": Method("Zero-1-to-3", ["bundled/zero123"], kind="image"),
    "magic123": Method("Magic123", ["bundled/magic123-coarse"], kind="image"),
}
REFERENCE_CAMERA = (20.0, 30.0, 3.8, 20.0)  # elevation, world azimuth, distance, fovy


def available(name: str) -> bool:
    return all(
        os.path.isfile(os.path.join(REPO_ROOT, "configs", s + ".yaml"))
        for s in METHODS[name].stages
    )


def recipe_digest(name: str) -> str:
    """A digest of the method's stage configs as parsed (comments and layout do not count) and
    its overrides: a recorded run of another digest was made with another recipe."""
    import hashlib

    import yaml

    h = hashlib.sha256()
    for stage in METHODS[name].stages:
        with open(os.path.join(REPO_ROOT, "configs", stage + ".yaml")) as f:
            h.update(json.dumps(yaml.safe_load(f), sort_keys=True).encode())
    h.update(json.dumps(METHODS[name].overrides).encode())
    return h.hexdigest()[:12]


def render_inputs(prompts: List[str], folder: str, size: int = 128) -> Dict[str, str]:
    """An RGBA reference image of each prompt's object (``scripts/make_example_images.py``)."""
    from PIL import Image

    sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
    from make_example_images import render_example

    from threestudio.bundled.shapes import ShapeRenderer

    folder = os.path.join(folder, "e{:g}_a{:g}_d{:g}_f{:g}".format(*REFERENCE_CAMERA))
    os.makedirs(folder, exist_ok=True)
    renderer = ShapeRenderer(size, size, seed=0)
    paths = {}
    for prompt in prompts:
        _, color, shape = prompt.split()
        path = os.path.join(folder, f"{color}_{shape}_rgba.png")
        if not os.path.isfile(path):
            rgba = render_example(renderer, shape, color, REFERENCE_CAMERA, size)["rgba"]
            Image.fromarray(np.ascontiguousarray(rgba)).save(path)
        paths[prompt] = path
    return paths


def run_stage(
    cmd: List[str], log_path: str, threads: Optional[int] = None
) -> Tuple[int, float, float]:
    """(exit code, wall seconds, peak resident MiB) of one ``launch.py`` process."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.time() - t0, usage.ru_maxrss / 1024


def run_method(name: str, prompt: str, seed: int, args, image: Optional[str]) -> dict:
    method = METHODS[name]
    tag = f"{prompt.replace(' ', '_')}_s{seed}"
    root = os.path.join(args.exp_root, name)
    inputs = [
        f"seed={seed}", f"tag={tag}", f"exp_root_dir={root}",
        f"system.prompt_processor.prompt={prompt}",
    ]  # fmt: skip
    if image is not None:  # image methods: the prompt only names the object to score
        inputs += [f"data.image_path={image}", f"data.default_elevation_deg={REFERENCE_CAMERA[0]}"]
    trial, wall, peak = None, 0.0, 0.0
    for i, stage in enumerate(method.stages):
        cmd = [sys.executable, "launch.py", "--config", f"configs/{stage}.yaml", "--train"]
        cmd += inputs + method.overrides + args.overrides
        if trial is not None:
            cmd.append(f"system.geometry_convert_from={trial}/ckpts/last.ckpt")
        log = os.path.join(args.exp_root, f"{name}_{tag}_stage{i}.log")
        os.makedirs(args.exp_root, exist_ok=True)
        code, seconds, mib = run_stage(cmd, log, args.threads)
        wall, peak = wall + seconds, max(peak, mib)
        if code != 0:
            return {"prompt": prompt, "seed": seed, "wall": wall, "peak": peak, "failed": log}
        trials = glob.glob(os.path.join(REPO_ROOT, root, "*", tag + "@*"))
        trial = max(trials, key=os.path.getmtime)
    return {"prompt": prompt, "seed": seed, "wall": wall, "peak": peak, "trial": trial}


def save_strip(trial: str, path: str, n: int = 4) -> None:
    """``n`` evenly spaced test views (their rgb panel) side by side."""
    import imageio.v2 as imageio

    _, paths = find_test_views(trial)
    picks = [paths[int(i * len(paths) / n)] for i in range(n)]
    panels = []
    for p in picks:
        img = np.asarray(imageio.imread(p))[..., :3]
        panels.append(img[:, : img.shape[0]])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    imageio.imwrite(path, np.concatenate(panels, axis=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", nargs="+", default=None, help="default: every available method")
    p.add_argument("--inputs", type=int, default=12, help="how many of the 30 prompts / objects")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--exp-root", default="outputs/bench-methods")
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "benchmarks", "results_methods.md"))
    p.add_argument("--images", default=os.path.join(REPO_ROOT, "docs", "images", "methods"))
    p.add_argument(
        "--strips", type=int, default=3, help="inputs per method with a strip in --images"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per run (OMP_NUM_THREADS); 1 lets two sittings share 2 cores",
    )
    p.add_argument("--list", action="store_true", help="list the methods and exit")
    p.add_argument("--rerun", action="store_true", help="repeat runs already recorded")
    p.add_argument("overrides", nargs="*", help="extra config overrides for every stage, after --")
    args = p.parse_args()
    if args.list:
        for name, m in METHODS.items():
            state = "" if available(name) else "  (recipe missing)"
            print(f"{name:16s} {m.kind:5s} {' -> '.join(m.stages)}{state}")
        return
    names = args.methods or [n for n in METHODS if available(n)]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        sys.exit(f"[ERROR] --methods: unknown {', '.join(unknown)} (known: {', '.join(METHODS)})")
    prompts = spread_prompts(args.inputs)
    images = render_inputs(prompts, os.path.join(args.exp_root, "inputs"))
    scorer = ClassifierScorer()
    record = os.path.splitext(args.out)[0] + ".json"
    for name in names:
        recipe = recipe_digest(name)
        for k, prompt in enumerate(prompts):
            for seed in args.seeds:
                image = images[prompt] if METHODS[name].kind == "image" else None
                camera = list(REFERENCE_CAMERA) if image is not None else None
                rows = load_record(record).get(name, [])
                done = [r for r in rows if same_run(r, prompt, seed, camera, recipe)]
                if done and not args.rerun:
                    continue
                r = run_method(name, prompt, seed, args, image)
                r["recipe"] = recipe
                if camera is not None:
                    r["input_camera"] = camera
                if "trial" in r:
                    e = evaluate_trial(r["trial"], scorer, prompt=prompt)
                    r.update(r_precision=e["r_precision"], read_as=next(iter(e["top_prompts"])))
                    if seed == args.seeds[0] and k < args.strips:
                        strip = os.path.join(args.images, f"{name}_{prompt.replace(' ', '_')}.png")
                        save_strip(r["trial"], strip)
                    print(f"{name:16s} {prompt:18s} seed {seed}: {r['wall']:6.0f} s "
                          f"{r['peak']:6.0f} MiB  R-precision {r['r_precision']:.3f}"
                          f"  (most views: {r['read_as']})", flush=True)  # fmt: skip
                else:
                    print(f"{name} {prompt} seed {seed}: FAILED (log {r['failed']})", flush=True)
                r["load_average"] = round(os.getloadavg()[0], 1)
                write_table(args, add_to_record(record, name, r))


def same_run(
    r: dict,
    prompt: str,
    seed: int,
    camera: Optional[List[float]] = None,
    recipe: Optional[str] = None,
) -> bool:
    """Whether the recorded run ``r`` is of this input and seed (and, for an image method, an
    input rendered from this camera; with ``recipe``, of that recipe digest: a row from another
    camera or an edited recipe is run again). A row recorded before digests counts as the
    current recipe's."""
    if camera is not None and r.get("input_camera") != camera:
        return False
    if recipe is not None and r.get("recipe", recipe) != recipe:
        return False
    return (r["prompt"], r["seed"]) == (prompt, seed)


def load_record(record: str) -> Dict[str, List[dict]]:
    if not os.path.isfile(record):
        return {}
    with open(record) as f:
        return json.load(f)


def add_to_record(record: str, name: str, run: dict) -> Dict[str, List[dict]]:
    """Adds ``run`` (replacing any earlier one of the same input and seed) to the record file,
    under a lock and re-read first, so sittings running side by side keep each other's runs."""
    import fcntl

    with open(record + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_record(record)
        rows = results.setdefault(name, [])
        rows[:] = [x for x in rows if not same_run(x, run["prompt"], run["seed"])] + [run]
        results = {n: results[n] for n in [*METHODS, *results] if n in results}  # table order
        with open(record + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(record + ".tmp", record)
    return results


def write_table(args, results: Dict[str, List[dict]]) -> None:
    """The markdown table of every recorded run (``results``: method -> runs)."""
    runs = [r for rows in results.values() for r in rows]
    prompts = list(dict.fromkeys(r["prompt"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    lines = [
        "# Method table (`benchmarks/bench_methods.py`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}. "
        f"Runs so far: {len(runs)} over {len(prompts)} of the 30 prompts, seeds "
        f"{' '.join(map(str, seeds))}; each run lists the load average it ran under (on a "
        "shared machine wall times are upper bounds). R-precision: the share of a trial's test "
        "views the bundled classifier reads as the trial's prompt among the 30 (image-to-3D: "
        "the conditioning object's prompt).",
        "",
        "| method | stages | runs (failed) | wall s, mean (max) | peak MiB | R-precision | runs read as prompt |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, rows in results.items():
        if not rows:
            continue
        done = [r for r in rows if "trial" in r]
        walls = [r["wall"] for r in done] or [0.0]
        mean_r = sum(r["r_precision"] for r in done) / max(1, len(done))
        hit = sum(r["read_as"] == r["prompt"] for r in done) / max(1, len(done))
        peak = max((r["peak"] for r in done), default=0)
        lines.append(
            f"| {name} | {' -> '.join(METHODS[name].stages)} | {len(done)} "
            f"({len(rows) - len(done)}) | {sum(walls) / len(walls):.0f} ({max(walls):.0f}) "
            f"| {peak:.0f} | {mean_r:.3f} | {100 * hit:.0f}% |"
        )
    lines += [
        "",
        "## Runs",
        "",
        "| method | prompt | seed | wall s | peak MiB | R-precision | most views read as | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for r in rows:
            load = r.get("load_average", "-")
            if "trial" in r:
                lines.append(
                    f"| {name} | {r['prompt']} | {r['seed']} | {r['wall']:.0f} | {r['peak']:.0f} "
                    f"| {r['r_precision']:.3f} | {r['read_as']} | {load} |"
                )
            else:
                lines.append(
                    f"| {name} | {r['prompt']} | {r['seed']} | {r['wall']:.0f} | - | failed | - "
                    f"| {load} |"
                )
    lines += ["", "## What they produce", "", "Four test views of the first seed's trial:", ""]
    for name in results:
        for prompt in prompts:
            strip = os.path.join(args.images, f"{name}_{prompt.replace(' ', '_')}.png")
            if os.path.isfile(strip):
                rel = os.path.relpath(strip, os.path.dirname(args.out))
                lines.append(f"- {name}, {prompt}: ![{name} {prompt}]({rel})")
    with open(args.out + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
