"""Crash safety, tested by killing (tests/kill_harness.py): at least 20 SIGKILLs of real training
runs (inside a checkpoint, image, video, export, config and prompt-cache write, and at random
moments); after each one every file of the trial is whole, the earlier trial and cache entries are
untouched, and the next run resumes at last.ckpt's step. The trial, finished after all the kills,
has exactly the weights of a run never killed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_twenty_kills_lose_nothing_and_resume_exactly(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "kill_harness.py"), str(tmp_path), "--kills", "20"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["problems"] == []
    assert report["kills"] >= 20
    cycles = report["cycles"]
    # every targeted write was really interrupted: the run died there, not at its end
    for kind in ("cache", "yaml", "ckpt", "png", "mp4", "obj"):
        targeted = [c for c in cycles if c["kind"] == kind]
        assert targeted and all(c["killed"] for c in targeted), kind
    # resumes happened, and each started training at its checkpoint's step
    resumed = [c for c in cycles if "started_at" in c]
    assert len(resumed) >= 5
    assert all(c["started_at"] == c["resumed_from"] for c in resumed)
    assert report["final_exit"] == 0
    assert report["final"]["steps"] == [16, 16]
    assert report["final"]["max_abs_diff"] == 0.0
