"""Run many launch.py invocations in one Python process (imports paid once).

    python tests/launch_sequence.py JOBS.json

JOBS.json is ``{"jobs": [{"name": ..., "runs": [argv, ...], "log": path, "after": name|null}],
"results": path}``: each job's runs are ``launch.main(argv)`` calls made in order, the first
non-zero exit status (or exception, whose traceback goes to the log) ending the job; a job whose
``after`` job failed is not run. Each job's output (file descriptors 1 and 2, so Python, logging and
C-level output alike) goes to its log file. ``results`` receives ``{name: exit status}``, rewritten
after every job. A job with ``"snapshot": FOLDER`` also leaves ``<log>.trials.json``, the
``EXP/TRIAL`` folders under FOLDER after it ran. Used by the every-config test, where each config trains, tests and exports from
its checkpoint, and every import of torch, diffusers and Lightning would otherwise cost seconds."""

import gc
import json
import os
import sys
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def run_job(launch, job) -> int:
    for argv in job["runs"]:
        print(f"== launch.py {' '.join(argv)}", file=sys.stderr, flush=True)
        sys.argv = [os.path.join(REPO, "launch.py"), *argv]
        try:
            rc = launch.main(argv)
        except SystemExit as e:  # argparse's exit on a command-line mistake
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - a failed job is recorded, the next one runs
            traceback.print_exc()
            rc = 1
        if rc:
            return rc
    return 0


def main() -> int:
    import launch

    with open(sys.argv[1]) as f:
        spec = json.load(f)
    results = {}
    saved = os.dup(1), os.dup(2)
    try:
        for job in spec["jobs"]:
            if job.get("after") and results.get(job["after"], 1) != 0:
                results[job["name"]] = f"not run: {job['after']} failed"
            else:
                sys.stdout.flush()
                sys.stderr.flush()
                with open(job["log"], "w") as log:
                    os.dup2(log.fileno(), 1)
                    os.dup2(log.fileno(), 2)
                    try:
                        results[job["name"]] = run_job(launch, job)
                    finally:
                        sys.stdout.flush()
                        sys.stderr.flush()
                        os.dup2(saved[0], 1)
                        os.dup2(saved[1], 2)
                if job.get("snapshot"):
                    # the trial folders (EXP/TRIAL) that exist after this job
                    root = job["snapshot"]
                    trials = sorted(
                        os.path.join(exp, trial)
                        for exp in (os.listdir(root) if os.path.isdir(root) else [])
                        if os.path.isdir(os.path.join(root, exp))
                        for trial in os.listdir(os.path.join(root, exp))
                    )
                    with open(job["log"] + ".trials.json", "w") as f:
                        json.dump(trials, f)
                gc.collect()
            with open(spec["results"] + ".tmp", "w") as f:
                json.dump(results, f)
            os.replace(spec["results"] + ".tmp", spec["results"])
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
