"""Every YAML in ``configs/`` runs as users run it: ``--train`` a few steps, then ``--test`` and
``--export`` from the trial's ``configs/parsed.yaml`` and checkpoint, with tiny random models
substituted by dotted overrides (the config's modules otherwise unchanged). A two-stage method's
second stage starts from its first stage's checkpoint.

The rows (which tiny model goes where, which overrides make a run tiny, which stage comes
before) live in ``tests/config_runs/``, one module per method family; a config without a row, or
a row without a config, fails the fast test below. Published copies (a published table of
``tests/test_published_configs.py`` written out as it is) run with only the prompt, the model
paths and the run length overridden."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trimesh
import yaml
from omegaconf import OmegaConf

from tests.config_runs import Row, collect
from threestudio.utils.paths import REPO_ROOT as REPO

CONFIGS = Path(REPO) / "configs"
SEQUENCE = os.path.join(REPO, "tests", "launch_sequence.py")
PROMPT = "a hamburger"

ROWS = collect("ROWS")
PUBLISHED_COPIES = collect("PUBLISHED_COPIES")

# what a published copy may override: the prompt, model paths, the run length, the stage hand-over
PUBLISHED_COPY_KEYS = (
    "system.prompt_processor.prompt",
    "system.prompt_processor.spawn",
    "trainer.max_steps",
    "trainer.val_check_interval",
    "trainer.enable_progress_bar",
    "data.n_val_views",
    "data.n_test_views",
    "system.geometry_convert_from",
)


def config_names():
    return sorted(str(p.relative_to(CONFIGS).with_suffix("")) for p in CONFIGS.rglob("*.yaml"))


def test_every_config_has_a_row():
    names = config_names()
    missing = [n for n in names if n not in ROWS]
    assert not missing, f"add rows for these configs to tests/config_runs/: {missing}"
    stale = [n for n in ROWS if n not in names]
    assert not stale, f"rows without a config in configs/: {stale}"
    for name, row in ROWS.items():
        assert row.after is None or row.after in ROWS, f"{name}: after={row.after} has no row"


def test_published_copies_override_only_what_they_may():
    from tests.test_published_configs import PUBLISHED

    for name, row in PUBLISHED_COPIES.items():
        assert name in PUBLISHED, f"{name} is not a published table"
        keys = [o.split("=", 1)[0] for o in row.overrides] + list(row.models)
        for key in keys:
            assert key in PUBLISHED_COPY_KEYS or key.split(".")[-1].startswith(
                "pretrained_model_name_or_path"
            ), f"published copy of {name} overrides {key}"


# ---------- tiny models, built once per session ----------


def _build(kind: str, folder: Path) -> str:
    from tests import tiny_pipelines as tp
    from tests import tiny_text as tt

    if kind == "sd":
        path = tp.build_tiny_sd(folder)
        tt.make_tiny_clip_text(folder)
        return path
    if kind == "if":
        path = tp.build_tiny_if(folder)
        tt.make_tiny_t5_text(folder)
        return path
    builder = getattr(tp, f"build_tiny_{kind.replace('-', '_')}", None)
    if builder is None:
        raise KeyError(f"no tiny model kind '{kind}' (add build_tiny_{kind} to tiny_pipelines)")
    return builder(folder)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("every_config_models")
    built = {}

    def get(kind: str) -> str:
        if kind not in built:
            built[kind] = _build(kind, root / kind)
        return built[kind]

    return get


# ---------- running a config ----------


def _needs_prompt(path: Path) -> bool:
    raw = OmegaConf.load(path)
    prompt = OmegaConf.select(raw, "system.prompt_processor.prompt", throw_on_missing=False)
    return raw.get("system", {}).get("prompt_processor_type") not in (None, "") and (
        prompt is None or OmegaConf.is_missing(raw.system.prompt_processor, "prompt")
    )


def _launch(workdir: Path, runs, timeout=900) -> subprocess.CompletedProcess:
    spec = workdir / f"runs-{len(list(workdir.glob('runs-*.json')))}.json"
    spec.write_text(json.dumps(runs))
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["THREESTUDIO_CACHE_DIR"] = str(workdir / "cache")
    return subprocess.run(
        [sys.executable, SEQUENCE, str(spec)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _train_argv(path: Path, row: Row, workdir: Path, tiny_models, handover=None, tag="run"):
    argv = [
        "--config",
        str(path),
        "--train",
        "--gpu",
        "0",
        f"exp_root_dir={workdir / 'outputs'}",
        f"tag={tag}",
        "use_timestamp=false",
        f"trainer.max_steps={row.steps}",
        f"trainer.val_check_interval={row.steps}",
        "trainer.enable_progress_bar=false",
        "system.export_after_train=false",
    ]
    if _needs_prompt(path):
        argv.append(f"system.prompt_processor.prompt={PROMPT}")
    argv += [f"{key}={tiny_models(kind)}" for key, kind in row.models.items()]
    argv += list(row.overrides)
    if handover is not None:
        argv.append(f"{row.handover}={handover}")
    return argv


def _trial(workdir: Path, tag="run") -> Path:
    trials = sorted((workdir / "outputs").glob(f"*/{tag}"))
    assert len(trials) == 1, trials
    return trials[0]


_STAGES = {}  # config name -> its trial (stages that later stages start from)


def _run_config(name: str, tmp_root: Path, tiny_models, full: bool) -> Path:
    row = ROWS[name]
    handover = None
    if row.after is not None:
        if row.after not in _STAGES:
            _STAGES[row.after] = _run_config(row.after, tmp_root, tiny_models, full=False)
        handover = str(_STAGES[row.after] / "ckpts" / "last.ckpt")
    workdir = tmp_root / name.replace("/", "__")
    workdir.mkdir(parents=True, exist_ok=True)
    path = CONFIGS / f"{name}.yaml"
    runs = [_train_argv(path, row, workdir, tiny_models, handover)]
    if full:
        # the trial folder is known before training: exp_root_dir/<name>/<tag>
        trial = workdir / "outputs" / str(OmegaConf.load(path).name) / "run"
        parsed = trial / "configs" / "parsed.yaml"
        ckpt = trial / "ckpts" / "last.ckpt"
        runs.append(["--config", str(parsed), "--test", "--gpu", "0", f"resume={ckpt}"])
        if row.export:
            runs.append(["--config", str(parsed), "--export", "--gpu", "0", f"resume={ckpt}"])
    proc = _launch(workdir, runs)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stderr[-4000:]}"
    trial = _trial(workdir)
    _STAGES.setdefault(name, trial)  # a later stage starts from this run, not a second one
    return trial


def _check_outputs(name: str, trial: Path, row: Row) -> None:
    save = trial / "save"
    assert (trial / "ckpts" / "last.ckpt").is_file()
    video = save / f"it{row.steps}-test.mp4"
    assert video.is_file() and video.stat().st_size > 0, f"{name}: no test video"
    assert list(save.glob(f"it{row.steps}-*.png")), f"{name}: no validation image"
    if row.export:
        export = save / f"it{row.steps}-export"
        files = sorted(p.name for p in export.iterdir()) if export.is_dir() else []
        assert files, f"{name}: --export wrote nothing"
        for obj in export.glob("*.obj"):
            mesh = trimesh.load(str(obj), force="mesh", process=False)
            assert len(mesh.faces) > 0, f"{name}: empty mesh {obj.name}"


@pytest.fixture(scope="session")
def every_config_root(tmp_path_factory):
    return tmp_path_factory.mktemp("every_config")


@pytest.mark.slow
@pytest.mark.parametrize("name", config_names())
def test_config_trains_tests_and_exports(name, every_config_root, tiny_models):
    if name not in ROWS:
        pytest.fail(f"{name} has no row in tests/config_runs/")
    trial = _run_config(name, every_config_root, tiny_models, full=True)
    _check_outputs(name, trial, ROWS[name])
    cfg = yaml.safe_load((trial / "configs" / "parsed.yaml").read_text())
    if ROWS[name].after is not None:
        assert cfg["system"][ROWS[name].handover.split(".")[-1]] is not None


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED_COPIES))
def test_published_copy_runs_unmodified(name, tmp_path, tiny_models, every_config_root):
    from tests.test_published_configs import PUBLISHED, fills, unflatten

    row = PUBLISHED_COPIES[name]
    table = dict(PUBLISHED[name])
    path = tmp_path / name
    path.write_text(yaml.safe_dump(unflatten(table)))
    handover = None
    if row.after is not None:
        if row.after not in _STAGES:
            _STAGES[row.after] = _run_config(row.after, every_config_root, tiny_models, False)
        handover = str(_STAGES[row.after] / "ckpts" / "last.ckpt")
    argv = _train_argv(path, row, tmp_path, tiny_models, handover)
    given = {a.split("=", 1)[0] for a in argv}
    argv += [f"{k}={v}" for k, v in fills(table).items() if k not in given]
    proc = _launch(tmp_path, [argv])
    assert proc.returncode == 0, f"published {name} failed:\n{proc.stderr[-4000:]}"
    assert (_trial(tmp_path) / "ckpts" / "last.ckpt").is_file()
