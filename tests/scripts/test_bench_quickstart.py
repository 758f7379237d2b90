"""benchmarks/bench_quickstart.py: scoring made trials stops on a folder that is not a trial with
one line naming it, before any scoring (or table) is done."""

import subprocess
import sys

from threestudio.utils.paths import REPO_ROOT as REPO


def test_a_folder_that_is_not_a_trial_is_one_line(tmp_path):
    out = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_quickstart.py", "--trials", str(tmp_path),
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (
        f"[ERROR] --trials: {tmp_path} has no configs/parsed.yaml; is it a trial folder?"
    )
    assert "Traceback" not in proc.stderr
    assert not out.exists()
