"""Bad input, one line each, nothing lost: every case below is a real launch.py invocation (all of
them in one process, tests/launch_sequence.py) that must exit with status 2 and print exactly one
``error:`` line naming the offending key, file or value (no traceback), leave no new trial
folder, and leave an earlier trial byte for byte as it was."""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch.py"
TINY_FIT = REPO / "tests" / "fixtures" / "tiny_fit.yaml"
SPHERES = REPO / "configs" / "reconstruct-spheres.yaml"
QUIET = ["trainer.enable_progress_bar=false"]
FIXED = ["use_timestamp=false", *QUIET]
# reconstruct-spheres at a size that runs in seconds
SMALL_SPHERES = [
    "data.width=8",
    "data.height=8",
    "data.batch_size=1",
    "data.eval_width=8",
    "data.eval_height=8",
    "data.n_val_views=1",
    "data.n_test_views=1",
    "system.geometry.pos_encoding_config.n_levels=2",
    "system.geometry.pos_encoding_config.log2_hashmap_size=8",
    "system.geometry.isosurface_resolution=16",
    "system.geometry.isosurface_threshold=auto",
    "system.renderer.num_samples_per_ray=16",
    "trainer.max_steps=1",
    "trainer.val_check_interval=1",
]


def cases(w: Path):
    """(name, argv, words the error line must contain). ``w`` is the work folder, holding the
    earlier trials and the broken inputs made by ``prepare``."""
    tiny = ["--config", str(TINY_FIT), "--train", *QUIET]
    old = w / "outputs" / "tiny-fit" / "earlier"
    old_cfg, old_ckpt = str(old / "configs" / "parsed.yaml"), str(old / "ckpts" / "last.ckpt")
    other_ckpt = str(w / "outputs" / "tiny-fit" / "other" / "ckpts" / "last.ckpt")
    spheres_old = w / "outputs" / "reconstruct-spheres" / "earlier"
    spheres = ["--config", str(SPHERES), "--train", *QUIET, *SMALL_SPHERES]
    quick = ["--config", str(REPO / "configs" / "quickstart.yaml"), "--train", *QUIET]
    zero123 = ["--config", str(REPO / "configs" / "zero123.yaml"), "--train", *QUIET]
    return [
        ("missing config file", ["--config", str(w / "nope.yaml"), "--train"], ["nope.yaml"]),
        ("config is not YAML", ["--config", str(w / "broken.yaml"), "--train"], ["broken.yaml"]),
        ("config is a folder", ["--config", str(w), "--train"], [str(w)]),
        ("no mode flag", ["--config", str(TINY_FIT)], ["--train"]),
        ("unknown top-level key", [*tiny, "trainr.max_steps=3"], ["trainr", "trainer"]),
        ("unknown system key", [*tiny, "system.optimiser.name=Adam"], ["optimiser"]),
        ("override without =", [*tiny, "trainer.max_steps"], ["trainer.max_steps"]),
        ("non-numeric override", [*tiny, "trainer.max_steps=lots"], ["trainer.max_steps", "lots"]),
        ("non-numeric lr", [*tiny, "system.optimizer.args.lr=fast"], ["lr", "fast"]),
        ("negative resolution", [*tiny, "data.height=-8"], ["data.height", "-8"]),
        ("zero batch size", [*tiny, "data.batch_size=0"], ["data.batch_size", "0"]),
        ("unknown system", [*tiny, "system_type=no-such-system"], ["no-such-system"]),
        ("unknown datamodule", [*tiny, "data_type=no-such-datamodule"], ["no-such-datamodule"]),
        ("empty system type", [*tiny, "system_type="], ["system_type"]),
        ("unknown optimizer", [*tiny, "system.optimizer.name=Adamm"], ["Adamm"]),
        ("unknown scheduler", [*tiny, "system.scheduler.name=NoSuchLR"], ["NoSuchLR"]),
        ("bad schedule", [*tiny, "system.loss.lambda_smooth=[1,2]"], ["lambda_smooth"]),
        ("bad --gpu", [*tiny, "--gpu", "zero"], ["--gpu", "zero"]),
        (
            "unknown prompt-library keyword",
            [*quick, "system.prompt_processor.prompt=lib:no_such_keyword_here"],
            ["no_such_keyword_here"],
        ),
        (
            "unknown geometry",
            [*spheres, "system.geometry_type=no-such-geometry"],
            ["system.geometry_type", "no-such-geometry"],
        ),
        ("resume from a missing checkpoint", [*tiny, f"resume={w / 'gone.ckpt'}"], ["gone.ckpt"]),
        (
            "resume from a truncated checkpoint",
            [*tiny, f"resume={w / 'truncated.ckpt'}"],
            ["truncated.ckpt"],
        ),
        (
            "resume from a file that is not a checkpoint",
            [*tiny, f"resume={w / 'broken.yaml'}"],
            ["broken.yaml"],
        ),
        (
            "resume from another trial's checkpoint",
            ["--config", old_cfg, "--train", *QUIET, f"resume={other_ckpt}"],
            ["other"],
        ),
        (
            "resume with another configuration",
            ["--config", old_cfg, "--train", *QUIET, f"resume={old_ckpt}", "system.image_size=4"],
            ["last.ckpt", "image"],
        ),
        (
            "resume with another geometry configuration",
            [
                "--config",
                str(spheres_old / "configs" / "parsed.yaml"),
                "--train",
                *QUIET,
                f"resume={spheres_old / 'ckpts' / 'last.ckpt'}",
                "system.geometry.pos_encoding_config.n_levels=3",
                "trainer.max_steps=2",
            ],
            ["last.ckpt", "geometry"],
        ),
        (
            "test from a truncated checkpoint",
            ["--config", old_cfg, "--test", *QUIET, f"resume={w / 'truncated.ckpt'}"],
            ["truncated.ckpt"],
        ),
        (
            "output folder not writable",
            [*tiny, f"exp_root_dir={w / 'a_file.txt' / 'outputs'}"],
            ["a_file.txt"],
        ),
        (
            "weights from a missing file",
            [*tiny, f"system.weights={w / 'no_weights.ckpt'}"],
            ["no_weights.ckpt"],
        ),
        (
            "stage hand-over from a missing checkpoint",
            [*spheres, f"system.geometry_convert_from={w / 'no_stage1.ckpt'}"],
            ["no_stage1.ckpt"],
        ),
        ("missing image", [*zero123, f"data.image_path={w / 'none.png'}"], ["none.png"]),
        ("unreadable image", [*zero123, f"data.image_path={w / 'junk.png'}"], ["junk.png"]),
        (
            "image without alpha or mask",
            [*zero123, f"data.image_path={w / 'opaque.png'}"],
            ["opaque.png", "alpha"],
        ),
    ]


def tree_digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def launch(workdir: Path, *argv) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(LAUNCH), *argv], cwd=workdir, env=env, capture_output=True, text=True
    )


def prepare_tiny(w: Path, tags=("earlier",)) -> None:
    """The tiny extension in w/custom and a 6-step tiny-fit trial per tag."""
    custom = w / "custom"
    custom.mkdir()
    shutil.copytree(REPO / "tests" / "fixtures" / "ext_tiny_fit", custom / "ext_tiny_fit")
    for tag in tags:
        proc = launch(w, "--config", str(TINY_FIT), "--train", f"tag={tag}", *FIXED)
        assert proc.returncode == 0, proc.stderr


def prepare(w: Path) -> None:
    prepare_tiny(w, ("earlier", "other"))
    fixed = FIXED
    proc = launch(w, "--config", str(SPHERES), "--train", "tag=earlier", *fixed, *SMALL_SPHERES)
    assert proc.returncode == 0, proc.stderr
    (w / "broken.yaml").write_text("name: [unclosed\n  key: : :\n")
    good = (w / "outputs" / "tiny-fit" / "earlier" / "ckpts" / "last.ckpt").read_bytes()
    (w / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    (w / "a_file.txt").write_text("not a folder\n")
    (w / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    imageio.imwrite(w / "opaque.png", np.full((16, 16, 3), 200, dtype=np.uint8))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    w = tmp_path_factory.mktemp("bad_inputs")
    prepare(w)
    earlier = {d: tree_digest(d) for d in (w / "outputs").glob("*/*")}
    listed = cases(w)
    jobs = [
        {
            "name": name,
            "runs": [argv],
            "log": str(w / f"log{i}.txt"),
            "after": None,
            "snapshot": str(w / "outputs"),
        }
        for i, (name, argv, _) in enumerate(listed)
    ]
    spec = {"jobs": jobs, "results": str(w / "results.json")}
    (w / "jobs.json").write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "launch_sequence.py"), str(w / "jobs.json")],
        cwd=w,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((w / "results.json").read_text())
    logs = {job["name"]: Path(job["log"]).read_text() for job in jobs}
    trials = {
        job["name"]: json.loads(Path(job["log"] + ".trials.json").read_text()) for job in jobs
    }
    after = {d: tree_digest(d) for d in (w / "outputs").glob("*/*")}
    before = sorted(str(d.relative_to(w / "outputs")) for d in earlier)
    return listed, results, logs, trials, before, earlier, after


def test_there_are_at_least_25_cases(tmp_path):
    assert len(cases(tmp_path)) >= 25


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(cases(Path("/w")))))
def test_bad_input_is_one_line_and_loses_nothing(outcomes, index):
    listed, results, logs, trials, before, earlier, after = outcomes
    name, _, words = listed[index]
    log = logs[name]
    assert results[name] == 2, f"{name}: exit status {results[name]}\n{log}"
    assert "Traceback" not in log, log
    errors = [ln for ln in log.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, log
    for word in words:
        assert word in errors[0], f"{name}: '{word}' not in {errors[0]!r}"
    # no new trial after this case, and the earlier trials are exactly as they were
    assert trials[name] == before, f"{name} left {sorted(set(trials[name]) - set(before))}"
    assert after == earlier


@pytest.mark.slow
def test_disk_full_during_a_run_is_one_line_and_loses_nothing(tmp_path, monkeypatch, capsys):
    """A real launch whose checkpoint write hits a full disk (ENOSPC simulated at torch.save):
    status 2, one line naming the checkpoint, no half-made trial, the earlier trial intact."""
    import errno

    import launch

    prepare_tiny(tmp_path)
    earlier = tmp_path / "outputs" / "tiny-fit" / "earlier"
    digest = tree_digest(earlier)

    def full(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.chdir(tmp_path)
    # launch.main sets up the threestudio logger for a console; put it back afterwards
    logger = logging.getLogger("threestudio")
    for attr in ("handlers", "propagate", "level"):
        value = getattr(logger, attr)
        monkeypatch.setattr(logger, attr, list(value) if attr == "handlers" else value)
    monkeypatch.setattr(torch, "save", full)
    rc = launch.main(["--config", str(TINY_FIT), "--train", *QUIET, "tag=full"])
    err = capsys.readouterr().err
    assert rc == 2, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "no space left" in errors[0] and ".ckpt" in errors[0], err
    assert sorted(p.name for p in (tmp_path / "outputs" / "tiny-fit").iterdir()) == ["earlier"]
    assert tree_digest(earlier) == digest


def test_disk_full_while_saving_a_checkpoint_keeps_the_earlier_one(tmp_path, monkeypatch):
    """AtomicCheckpointIO: a failed write (simulated ENOSPC) leaves the previous checkpoint whole
    and no temporary file behind."""
    import errno

    from threestudio.utils.callbacks import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)
    before = path.read_bytes()

    def full(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError):
        io.save_checkpoint({"global_step": 2}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
