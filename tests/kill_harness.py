"""Crash-safety harness: SIGKILL training runs at random moments and inside writes, then check
that nothing is damaged.

    python tests/kill_harness.py WORKDIR [--kills 20] [--seed 0]

One parent process imports launch.py and everything it needs once, then forks a child per run
(a real ``launch.main`` with its own process, killed with SIGKILL) and a child per check, so a
cycle costs the run, not the imports. The run is the bundled quickstart at a tiny size, with a
prompt-embedding cache of its own, a checkpoint every few steps, validation images, the test video
and the mesh export. Kills come in two kinds:

- inside a write (tests/fixtures/ext_crash: the N-th checkpoint, video, export, image, config or
  cache entry dies half written, before its rename), and
- at a random moment of the run.

After every kill it checks:

- every ``*.ckpt`` of the trial loads, and no finished-looking file (.ckpt, .png, .mp4, .obj,
  parsed.yaml, cache .pt) is partial;
- the earlier, finished trial and its cache entries are byte for byte as they were.

The next run resumes from ``last.ckpt`` and must start training at that checkpoint's step (or
starts a new trial when the kill came before the first checkpoint). A last, unkilled run finishes
the trial; its final weights must equal those of a run that was never killed. Writes
``WORKDIR/report.json``."""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from threestudio.utils.atomic import TMP_DIR_PREFIX  # noqa: E402

MAX_STEPS = 16
PROMPT = "a red cube"  # the killed runs' prompt (the earlier trial keeps the quickstart's)
# the quickstart at a size that trains in about a second of compute on a CPU
TINY = [
    "data.batch_size=1",
    "data.width=16",
    "data.height=16",
    "data.eval_width=16",
    "data.eval_height=16",
    "data.n_val_views=1",
    "data.n_test_views=4",
    "system.renderer.num_samples_per_ray=16",
    "system.geometry.pos_encoding_config.n_levels=2",
    "system.geometry.pos_encoding_config.log2_hashmap_size=10",
    "system.geometry.isosurface_resolution=16",
    "system.prompt_processor.spawn=false",
    f"trainer.max_steps={MAX_STEPS}",
    "trainer.val_check_interval=4",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "checkpoint.every_n_train_steps=2",
    "checkpoint.save_top_k=-1",
]
# kills inside writes: (kind, which write of that kind)
TARGETED = [("cache", 1), ("yaml", 1), ("ckpt", 1), ("ckpt", 2), ("png", 1), ("ckpt", 3)]
# the kills in the test video and the export come last: they happen once training is over
TARGETED_LAST = [("mp4", 1), ("obj", 1)]
FINISHED_SUFFIXES = (".ckpt", ".png", ".mp4", ".obj", ".mtl", ".yaml", ".pt", ".json")


def digest(folder: str) -> dict:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def run_child(argv, env, kill_after=None):
    """launch.main(argv) in a forked child; SIGKILL it after ``kill_after`` seconds (None: let it
    finish). Returns (exit status or None when killed by us, seconds, signal)."""
    start = time.time()
    pid = os.fork()
    if pid == 0:  # the child: a launch.py run
        os.environ.update(env)
        import launch

        log = os.open(env["THREESTUDIO_TEST_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.argv = [os.path.join(REPO, "launch.py"), *argv]
        try:
            rc = launch.main(argv)
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            rc = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    killed_by_us = False
    if kill_after is not None:
        deadline = start + kill_after
        while time.time() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.02)
        else:
            os.kill(pid, signal.SIGKILL)
            killed_by_us = True
            _, status = os.waitpid(pid, 0)
    else:
        _, status = os.waitpid(pid, 0)
    seconds = time.time() - start
    if os.WIFSIGNALED(status):
        return None, seconds, os.WTERMSIG(status), killed_by_us
    return os.WEXITSTATUS(status), seconds, None, killed_by_us


def check_in_child(fn, *args):
    """Run fn(*args) -> json-able in a forked child (the parent stays free of torch's thread
    pools, so that later forks are safe)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            result = {"ok": True, "value": fn(*args)}
        except BaseException as e:  # noqa: BLE001
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        with os.fdopen(write, "w") as f:
            json.dump(result, f)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    result = json.loads(text)
    if not result["ok"]:
        raise AssertionError(result["error"])
    return result["value"]


def inspect_trial(trial: str, cache: str):
    """Every finished-looking file loads; returns last.ckpt's global step (None: no last.ckpt)."""
    import imageio.v2 as imageio
    import torch
    from omegaconf import OmegaConf
    from PIL import Image

    problems = []
    for root, dirs, files in os.walk(trial):
        # partial files live in hidden .tmpPID folders, which no reader lists
        dirs[:] = [d for d in dirs if not d.startswith(".tmp")]
        for name in files:
            path = os.path.join(root, name)
            if not name.endswith(FINISHED_SUFFIXES):
                continue
            try:
                if name.endswith(".ckpt"):
                    ckpt = torch.load(path, map_location="cpu", weights_only=False)
                    assert "state_dict" in ckpt
                elif name.endswith(".png"):
                    with Image.open(path) as im:
                        im.load()
                elif name.endswith(".mp4"):
                    assert len(imageio.mimread(path)) > 0
                elif name.endswith(".obj"):
                    text = open(path).read()
                    assert text.endswith("\n") and "\nf " in text
                elif name.endswith(".yaml"):
                    OmegaConf.load(path)
                elif name.endswith(".json"):
                    json.load(open(path))
            except Exception as e:  # noqa: BLE001
                problems.append(f"{os.path.relpath(path, trial)}: {type(e).__name__}: {e}")
    for name in digest(cache) if os.path.isdir(cache) else []:  # local models: subfolders
        # a write the kill interrupted stays in its hidden temporary folder, never a finished name
        if name.endswith(".pt") and not any(
            part.startswith(TMP_DIR_PREFIX) for part in name.split(os.sep)
        ):
            try:
                torch.load(os.path.join(cache, name), weights_only=True)
            except Exception as e:  # noqa: BLE001
                problems.append(f"cache/{name}: {type(e).__name__}: {e}")
    last = os.path.join(trial, "ckpts", "last.ckpt")
    step = None
    if os.path.isfile(last):
        step = int(torch.load(last, map_location="cpu", weights_only=False)["global_step"])
    return {"problems": problems, "last_step": step}


def final_weights_equal(a: str, b: str):
    import torch

    sa = torch.load(a, map_location="cpu", weights_only=False)
    sb = torch.load(b, map_location="cpu", weights_only=False)
    keys = sorted(sa["state_dict"])
    diff = max(
        float((sa["state_dict"][k].float() - sb["state_dict"][k].float()).abs().max()) for k in keys
    )
    return {"steps": [sa["global_step"], sb["global_step"]], "max_abs_diff": diff}


def newest_trial(exp: str, prefix: str):
    if not os.path.isdir(exp):
        return None
    names = sorted(n for n in os.listdir(exp) if n.startswith(prefix))
    return os.path.join(exp, names[-1]) if names else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    w = os.path.abspath(args.workdir)
    os.makedirs(w, exist_ok=True)
    os.chdir(w)
    custom = os.path.join(w, "custom", "ext_crash")
    if not os.path.isdir(custom):
        shutil.copytree(os.path.join(REPO, "tests", "fixtures", "ext_crash"), custom)
    cache = os.path.join(w, "cache")
    outputs = os.path.join(w, "outputs")
    exp = os.path.join(outputs, "quickstart")
    config = os.path.join(REPO, "configs", "quickstart.yaml")
    base = [*TINY, f"exp_root_dir={outputs}", f"system.prompt_processor.cache_dir={cache}"]
    starts = os.path.join(w, "starts.txt")
    env = {
        "OMP_NUM_THREADS": "1",
        "THREESTUDIO_TEST_CACHE": cache,
        "THREESTUDIO_TEST_STARTS": starts,
        "THREESTUDIO_TEST_CRASH": "",
        "HF_HUB_OFFLINE": "1",
    }
    # imported once here, before every fork (torch starts no threads until it computes)
    import diffusers  # noqa: F401
    import imageio.v2  # noqa: F401
    import pytorch_lightning  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import launch  # noqa: F401
    import threestudio.data  # noqa: F401
    import threestudio.models  # noqa: F401
    import threestudio.systems  # noqa: F401

    report = {"cycles": [], "problems": []}

    def fresh(tag, log, kill_after=None, crash="", prompt=PROMPT):
        argv = ["--config", config, "--train", *base, f"tag={tag}"]
        if prompt is not None:
            argv.append(f"system.prompt_processor.prompt={prompt}")
        return run_child(
            argv, {**env, "THREESTUDIO_TEST_LOG": log, "THREESTUDIO_TEST_CRASH": crash}, kill_after
        )

    # an earlier, finished trial and its cache entries (another prompt), which no kill may touch
    rc, seconds, _, _ = fresh("earlier", os.path.join(w, "earlier.log"), prompt=None)
    assert rc == 0, open(os.path.join(w, "earlier.log")).read()[-3000:]
    earlier = newest_trial(exp, "earlier")
    earlier_digest, cache_digest = digest(earlier), digest(cache)
    report["straight_seconds"] = round(seconds, 2)

    rng = random.Random(args.seed)

    def plan():
        """The targeted kills, random ones until the kills (with the last targeted ones) reach
        --kills (a random moment may fall after a run's end), then the video and export kills."""
        yield from (("write", kind, n) for kind, n in TARGETED)
        for _ in range(3 * args.kills):
            kills = sum(c["killed"] for c in report["cycles"])
            if kills + len(TARGETED_LAST) >= args.kills:
                break
            yield ("random", None, None)
        yield from (("write", kind, n) for kind, n in TARGETED_LAST)

    trial = None
    for i, (how, kind, n) in enumerate(plan()):
        log = os.path.join(w, f"cycle{i}.log")
        before = None
        if trial is not None:
            before = check_in_child(inspect_trial, trial, cache)["last_step"]
        crash = f"{kind}:{n}" if how == "write" else ""
        # a random moment of a run (most runs resume part-way, so mostly before its end)
        kill_after = rng.uniform(0.05, 0.6) * seconds if how == "random" else 4 * seconds
        if before == MAX_STEPS and how == "random":
            before = None  # finished: the next random kills go to a new trial
        if before is None:  # no checkpoint yet: a new trial
            rc, t, sig, ours = fresh("crash", log, kill_after, crash)
        else:
            rc, t, sig, ours = run_child(
                [
                    "--config",
                    os.path.join(trial, "configs", "parsed.yaml"),
                    "--train",
                    f"resume={os.path.join(trial, 'ckpts', 'last.ckpt')}",
                    "trainer.enable_progress_bar=false",
                ],
                {**env, "THREESTUDIO_TEST_LOG": log, "THREESTUDIO_TEST_CRASH": crash},
                kill_after,
            )
        trial = newest_trial(exp, "crash") if before is None else trial
        started = open(starts).read().split() if os.path.exists(starts) else []
        cycle = {
            "how": how,
            "kind": kind,
            "n": n,
            "seconds": round(t, 2),
            "killed": sig == signal.SIGKILL,
            "exit": rc,
            "resumed_from": before,
        }
        if trial is not None:
            state = check_in_child(inspect_trial, trial, cache)
            cycle.update(last_step=state["last_step"], problems=state["problems"])
            report["problems"] += [f"cycle {i}: {p}" for p in state["problems"]]
        if before is not None and started:
            cycle["started_at"] = int(started[-1])
            if int(started[-1]) != before:
                report["problems"].append(
                    f"cycle {i}: resumed from step {before} but trained from {started[-1]}"
                )
        if digest(earlier) != earlier_digest:
            report["problems"].append(f"cycle {i}: the earlier trial changed")
        cache_now = digest(cache)
        changed = [k for k, v in cache_digest.items() if cache_now.get(k) != v]
        if changed:
            report["problems"].append(f"cycle {i}: cache entries changed: {changed}")
        cache_digest = {k: v for k, v in cache_now.items() if k.endswith(".pt")}
        if rc not in (None, 0) and not cycle["killed"]:
            report["problems"].append(f"cycle {i}: exit status {rc}: see {log}")
        report["cycles"].append(cycle)
        if os.path.exists(starts):
            os.remove(starts)
        with open(os.path.join(w, "report.json"), "w") as f:
            json.dump(report, f, indent=1)

    # finish the trial without a kill; its weights equal the straight run's
    last = os.path.join(trial, "ckpts", "last.ckpt")
    rc, _, _, _ = run_child(
        [
            "--config",
            os.path.join(trial, "configs", "parsed.yaml"),
            "--train",
            f"resume={last}",
            "trainer.enable_progress_bar=false",
        ],
        {**env, "THREESTUDIO_TEST_LOG": os.path.join(w, "final.log")},
    )
    report["final_exit"] = rc
    # the same prompt never killed (its cache entries exist by now: embeddings load as computed)
    rc, _, _, _ = fresh("straight", os.path.join(w, "straight.log"))
    assert rc == 0, open(os.path.join(w, "straight.log")).read()[-3000:]
    straight = newest_trial(exp, "straight")
    report["final"] = check_in_child(
        final_weights_equal, last, os.path.join(straight, "ckpts", "last.ckpt")
    )
    report["kills"] = sum(c["killed"] for c in report["cycles"])
    with open(os.path.join(w, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
