"""Short runs of the bundled recipes (``configs/bundled/``) through ``launch.py``, for the slow
tests of each method family: train a few steps with the bundled models, then read the trial's
outputs and logged losses."""

import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from threestudio.utils.paths import REPO_ROOT
from threestudio.utils.typing import Dict, List, Sequence, Tuple


@dataclass
class Trial:
    path: Path
    step: int  # the last training step
    metrics: List[Dict[str, str]]  # the rows of csv_logs/version_0/metrics.csv

    @property
    def save(self) -> Path:
        return self.path / "save"

    def series(self, key: str) -> List[float]:
        """The logged values of ``key`` in step order (rows without it are skipped)."""
        return [float(r[key]) for r in self.metrics if r.get(key) not in (None, "")]


def run_recipe(
    tmp_path: Path,
    config: str,
    steps: int,
    overrides: Sequence[str] = (),
    timeout: int = 900,
) -> Trial:
    """``python launch.py --config configs/bundled/<config>.yaml --train`` for ``steps`` steps
    into ``tmp_path``, logging every step; fails the test with stderr's tail if the run fails."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    root = tmp_path / "runs"
    cmd = [
        sys.executable, "launch.py", "--config", f"configs/bundled/{config}.yaml", "--train",
        f"trainer.max_steps={steps}", "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false", f"exp_root_dir={root}", *overrides,
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (name_dir,) = root.iterdir()
    (trial,) = name_dir.iterdir()
    with open(trial / "csv_logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return Trial(trial, steps, rows)


def first_last_means(values: List[float], k: int) -> Tuple[float, float]:
    """Means of the first and the last ``k`` values."""
    assert len(values) >= 2 * k, f"only {len(values)} values logged"
    return sum(values[:k]) / k, sum(values[-k:]) / k


def frames_of(trial: Trial) -> List[Path]:
    """The frames of the trial's last test render (``save/it<step>-test/*.png``)."""
    folder = trial.save / f"it{trial.step}-test"
    return sorted(folder.glob("*.png"))
