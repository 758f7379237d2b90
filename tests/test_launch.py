"""launch.py end to end with a third-party extension placed in a temporary custom/ folder."""

import csv
import os
import shutil
import subprocess
import sys

import imageio.v2 as imageio
import pytest
import torch

from threestudio.utils.paths import REPO_ROOT as REPO

LAUNCH = os.path.join(REPO, "launch.py")
CONFIG = os.path.join(REPO, "tests", "fixtures", "tiny_fit.yaml")
QUIET = ["trainer.enable_progress_bar=false"]


@pytest.fixture
def workdir(tmp_path):
    custom = tmp_path / "custom"
    custom.mkdir()
    shutil.copytree(
        os.path.join(REPO, "tests", "fixtures", "ext_tiny_fit"), custom / "ext_tiny_fit"
    )
    (custom / "broken_ext").mkdir()
    (custom / "broken_ext" / "__init__.py").write_text("import a_package_that_does_not_exist\n")
    (custom / "other_disabled").mkdir()
    (custom / "other_disabled" / "__init__.py").write_text(
        "raise RuntimeError('must be skipped')\n"
    )
    return tmp_path


def launch(workdir, *args):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, LAUNCH, *args, *QUIET],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc


def trials(workdir):
    root = workdir / "outputs" / "tiny-fit"
    return sorted(root.iterdir()) if root.exists() else []


def losses(trial, version):
    rows = list(csv.DictReader(open(trial / "csv_logs" / f"version_{version}" / "metrics.csv")))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


@pytest.mark.slow
def test_train_resume_test_export(workdir):
    proc = launch(workdir, "--config", CONFIG, "--train")
    assert proc.returncode == 0, proc.stderr
    assert "custom extension 'broken_ext' failed to import" in proc.stderr
    assert "ModuleNotFoundError" in proc.stderr
    assert "other_disabled" not in proc.stderr
    (trial,) = trials(workdir)
    for rel in [
        "ckpts/last.ckpt",
        "ckpts/epoch=0-step=3.ckpt",
        "configs/parsed.yaml",
        "configs/raw.yaml",
        "cmd.txt",
        "code/launch.py",
        "code/threestudio/__init__.py",
        "save/it6-test.mp4",
    ]:
        assert (trial / rel).exists(), rel
    assert len(imageio.mimread(str(trial / "save" / "it6-test.mp4"))) == 4
    straight = losses(trial, 0)
    assert sorted(straight) == list(range(6))
    assert straight[5] < straight[0]  # it learns
    straight_weights = torch.load(trial / "ckpts" / "last.ckpt", weights_only=True)["state_dict"]

    # resume from step 3 with the trial's parsed.yaml: same trial, same losses, same weights
    ckpt3 = trial / "ckpts" / "epoch=0-step=3.ckpt"
    proc = launch(
        workdir, "--config", str(trial / "configs" / "parsed.yaml"), "--train", f"resume={ckpt3}"
    )
    assert proc.returncode == 0, proc.stderr
    assert trials(workdir) == [trial]
    resumed = losses(trial, 1)
    assert sorted(resumed) == [3, 4, 5]
    for step in (3, 4, 5):
        assert resumed[step] == straight[step]
    resumed_ckpt = torch.load(trial / "ckpts" / "last.ckpt", weights_only=True)
    assert resumed_ckpt["global_step"] == 6
    for k, v in straight_weights.items():
        assert torch.equal(resumed_ckpt["state_dict"][k], v), k

    # test and export from the checkpoint name the checkpoint's step
    shutil.rmtree(trial / "save" / "it6-test")
    os.remove(trial / "save" / "it6-test.mp4")
    parsed = str(trial / "configs" / "parsed.yaml")
    last = str(trial / "ckpts" / "last.ckpt")
    proc = launch(workdir, "--config", parsed, "--test", f"resume={last}")
    assert proc.returncode == 0, proc.stderr
    assert (trial / "save" / "it6-test.mp4").exists()
    proc = launch(workdir, "--config", parsed, "--export", f"resume={ckpt3}")
    assert proc.returncode == 0, proc.stderr
    obj = (trial / "save" / "it3-export" / "model.obj").read_text()
    assert obj.count("\nv ") == 3 and "f 1 2 3" in obj


@pytest.mark.slow
def test_user_errors_are_one_line_and_leave_nothing(workdir):
    proc = launch(workdir, "--config", CONFIG, "--train", "system.optimiser.name=Adam")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert lines == ["error: unknown config key 'system.optimiser'; did you mean 'optimizer'?"], (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert trials(workdir) == []

    no_smooth = workdir / "no_smooth.yaml"
    no_smooth.write_text(open(CONFIG).read().replace("    lambda_smooth: [0, 0.1, 0.0, 4]\n", ""))
    proc = launch(workdir, "--config", str(no_smooth), "--train")
    assert proc.returncode == 2
    assert "system.loss.lambda_smooth is not set but the system produced loss_smooth" in proc.stderr
    assert trials(workdir) == []  # failed before any checkpoint: no half-made trial

    proc = launch(workdir, "--config", CONFIG, "--train", "system.loss.lambda_smooth=null")
    assert proc.returncode == 2
    assert "error: system.loss.lambda_smooth: scheduled value must be" in proc.stderr

    proc = launch(workdir, "--config", CONFIG, "--train", "system.optimiser.name=Adam", "--verbose")
    assert proc.returncode == 2 and "Traceback" in proc.stderr

    proc = launch(workdir, "--config", "missing.yaml", "--train")
    assert proc.returncode == 2 and "error: config file not found: missing.yaml" in proc.stderr


@pytest.mark.slow
def test_an_existing_trial_is_never_overwritten(workdir):
    args = [
        "--config",
        CONFIG,
        "--train",
        "use_timestamp=false",
        "tag=fixed",
        "trainer.max_steps=2",
    ]
    assert launch(workdir, *args).returncode == 0
    (trial,) = trials(workdir)
    before = (trial / "ckpts" / "last.ckpt").read_bytes()
    proc = launch(workdir, *args)
    assert proc.returncode == 2 and "exists" in proc.stderr and "resume=" in proc.stderr
    assert (trial / "ckpts" / "last.ckpt").read_bytes() == before
    # re-running a trial's parsed.yaml without resume starts a new trial beside it
    proc = launch(
        workdir, "--config", str(trial / "configs" / "parsed.yaml"), "--train", "use_timestamp=true"
    )
    assert proc.returncode == 0, proc.stderr
    assert len(trials(workdir)) == 2
    assert (trial / "ckpts" / "last.ckpt").read_bytes() == before


@pytest.mark.slow
def test_a_trial_keeps_one_last_ckpt_that_resumes_exactly(workdir):
    """2 steps (before the first step checkpoint at 3), then resumed from last.ckpt to 6: one
    last.ckpt holds step 6 (Lightning's own save_last would add last-v1.ckpt, last-v2.ckpt and an
    end-of-fit last that resumes one step off), and the 2 + 4 steps equal 6 straight ones."""
    fixed = ["use_timestamp=false"]
    assert launch(workdir, "--config", CONFIG, "--train", "tag=straight", *fixed).returncode == 0
    proc = launch(
        workdir, "--config", CONFIG, "--train", "tag=split", "trainer.max_steps=2", *fixed
    )
    assert proc.returncode == 0, proc.stderr
    split, straight = trials(workdir)
    assert sorted(p.name for p in (split / "ckpts").iterdir()) == ["last.ckpt"]
    parsed = str(split / "configs" / "parsed.yaml")
    last = split / "ckpts" / "last.ckpt"
    proc = launch(workdir, "--config", parsed, "--train", f"resume={last}", "trainer.max_steps=6")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (split / "ckpts").iterdir())
    assert names == ["epoch=0-step=3.ckpt", "epoch=0-step=6.ckpt", "last.ckpt"]
    assert torch.load(last, weights_only=True)["global_step"] == 6
    assert sorted(losses(split, 1)) == [2, 3, 4, 5]
    expected = losses(straight, 0)
    for step, loss in {**losses(split, 0), **losses(split, 1)}.items():
        assert loss == expected[step], step


@pytest.mark.slow
def test_ctrl_c_once_stops_training_and_tests_twice_quits(workdir, monkeypatch):
    proc = launch(workdir, "--config", CONFIG, "--train", "system.interrupt_at_steps=[2]")
    assert proc.returncode == 0, proc.stderr
    assert "stopping training after this step" in proc.stderr
    (trial,) = trials(workdir)
    ckpt = torch.load(trial / "ckpts" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3  # the step in flight finished, no more
    assert (trial / "save" / "it3-test.mp4").exists()  # the test stage ran

    proc = launch(workdir, "--config", CONFIG, "--train", "system.interrupt_at_steps=[1,1]")
    assert proc.returncode == 130, proc.stderr
    assert "interrupted: quitting" in proc.stderr
    assert len(trials(workdir)) == 2


def write_config(tmp_path, old=None, new=None):
    """tiny_fit.yaml with one line replaced, in tmp_path."""
    text = open(CONFIG).read()
    if old is not None:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def error_lines(proc):
    assert "Traceback" not in proc.stderr, proc.stderr
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


@pytest.mark.slow
def test_unregistered_name_names_the_extension_that_failed_to_import(tmp_path):
    (tmp_path / "custom" / "broken_ext").mkdir(parents=True)
    (tmp_path / "custom" / "broken_ext" / "__init__.py").write_text(
        "import a_package_that_does_not_exist\n"
    )
    config = write_config(tmp_path, "system_type: tiny-fit-system", "system_type: broken-system")
    proc = launch(tmp_path, "--config", config, "--train")
    assert proc.returncode == 2, proc.stderr
    (line,) = error_lines(proc)
    assert line.startswith("error: system_type: no module is registered as 'broken-system'")
    assert line.endswith(
        "; custom extension 'broken_ext' (ModuleNotFoundError: No module named "
        "'a_package_that_does_not_exist') failed to import, which may be why"
    )


@pytest.mark.slow
def test_an_empty_type_names_its_key(tmp_path):
    config = write_config(tmp_path, "data_type: random-camera-datamodule", 'data_type: ""')
    proc = launch(tmp_path, "--config", config, "--train")
    assert proc.returncode == 2, proc.stderr
    (line,) = error_lines(proc)
    assert line.startswith("error: data_type is empty: set it to a registered name (")
    assert "random-camera-datamodule" in line

    config = write_config(tmp_path, "system_type: tiny-fit-system", "system_type: ''")
    proc = launch(tmp_path, "--config", config, "--train")
    assert proc.returncode == 2, proc.stderr
    (line,) = error_lines(proc)
    assert line.startswith("error: system_type is empty: set it to a registered name (")
    assert "dreamfusion-system" in line


@pytest.mark.slow
def test_an_interpolation_of_a_missing_key_is_one_line(tmp_path):
    config = write_config(
        tmp_path, 'tag: "${rmspace:${system.label},_}"', 'tag: "${rmspace:${system.prompt},_}"'
    )
    proc = launch(tmp_path, "--config", config, "--train")
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc) == [
        "error: tag: the interpolation in '${rmspace:${system.prompt},_}' names 'system.prompt', "
        "which is not a config key"
    ]
    assert not (tmp_path / "outputs").exists()
