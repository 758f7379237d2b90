"""The console of a run shows the project's own lines and the progress bar, not third-party notices
that tell a user nothing (Lightning's device summary and product tips, checkpoint chatter)."""

import logging
import os
import shutil
import subprocess
import sys
import warnings

import pytest

import launch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NOISE = [
    "GPU available",
    "TPU available",
    "HPU available",
    "LOCAL_RANK",
    "💡 Tip",
    "litlogger",
    "litmodels",
    "weights_only",
    "Seed set to",
    "`Trainer.fit` stopped",
    "Restoring states from the checkpoint",
    "Loaded model weights from the checkpoint",
    "does not have many workers",
    "exists and is not empty",
    "predict returned None",
    "callbacks used to create the checkpoint",
]


@pytest.mark.slow
def test_a_short_run_prints_only_the_projects_lines_and_the_progress_bar(tmp_path):
    custom = tmp_path / "custom"
    custom.mkdir()
    shutil.copytree(
        os.path.join(REPO, "tests", "fixtures", "ext_tiny_fit"), custom / "ext_tiny_fit"
    )
    config = os.path.join(REPO, "tests", "fixtures", "tiny_fit.yaml")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch.py"), "--config", config, "--train"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    assert [line for line in NOISE if line in console] == []
    assert "[INFO] CUDA is not available: running on the CPU" in proc.stderr
    assert "[INFO] Outputs are in outputs/tiny-fit/" in proc.stderr
    assert "Training: 100%" in proc.stdout and "Testing DataLoader 0: 100%" in proc.stdout
    # every stderr line is the project's own, a progress bar's, or empty
    for line in proc.stderr.replace("\r", "\n").splitlines():
        assert line.startswith("[") or "it/s]" in line or not line.strip(), line


def test_expected_lightning_warnings_are_silenced_and_others_are_not():
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        launch.quiet_third_party()
        for message in [
            "predict returned None if it was on purpose, ignore this warning...",
            "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint "
            "need to be provided during `Trainer` instantiation.",
            "The 'val_dataloader' does not have many workers which may be a bottleneck.",
            "Checkpoint directory /x/ckpts exists and is not empty.",
            "a real warning",
        ]:
            warnings.warn(message, UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a real warning"]
    assert all(logger.level == logging.WARNING for logger in loggers)
    for logger, level in zip(loggers, levels):
        logger.setLevel(level)
