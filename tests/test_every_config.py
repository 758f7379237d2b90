"""Every YAML in ``configs/`` runs as users run it: ``--train`` a few steps, then ``--test`` and
``--export`` from the trial's ``configs/parsed.yaml`` and checkpoint, with tiny random models
substituted by dotted overrides (the config's modules otherwise unchanged). A two-stage method's
second stage starts from its first stage's checkpoint.

The rows (which tiny model goes where, which overrides make a run tiny, which stage comes
before) live in ``tests/config_runs/``, one module per method family; a config without a row, or
a row without a config, fails the fast test below. Published copies (a published table of
``tests/test_published_configs.py`` written out as it is) run with only the prompt, the model
paths, the run length and the run's size (resolution, samples, grid sizes) overridden."""

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
from threestudio.utils.typing import Any, Dict, List

CONFIGS = Path(REPO) / "configs"
SEQUENCE = os.path.join(REPO, "tests", "launch_sequence.py")
PROMPT = "a hamburger"

ROWS = collect("ROWS")
PUBLISHED_COPIES = collect("PUBLISHED_COPIES")

# what a published copy may override: the prompt, model paths, the run length, the stage
# hand-over, and the run's size (a published 512x512 render of 512 samples per ray needs tens of
# GiB on a CPU): resolution, samples per ray, hash-grid size, marching-grid size. Every key that
# decides what the method does stays as published.
PUBLISHED_COPY_KEYS = (
    "system.prompt_processor.prompt",
    "system.prompt_processor.spawn",
    "trainer.max_steps",
    "system.geometry.shape_init_steps",  # the length of a shape prior's fit
    "trainer.val_check_interval",
    "trainer.enable_progress_bar",
    "data.n_val_views",
    "data.n_test_views",
    "system.geometry_convert_from",
    "data.width",
    "data.height",
    "data.eval_width",
    "data.eval_height",
    "system.renderer.num_samples_per_ray",
    "system.renderer.num_samples_per_ray_importance",
    "system.geometry.pos_encoding_config.n_levels",
    "system.geometry.pos_encoding_config.log2_hashmap_size",
    "system.geometry.isosurface_resolution",
    "system.geometry.isosurface_threshold",
    "system.exporter.texture_size",
    "system.guide_shape",  # Sketch-Shape's guide mesh: an input the published file leaves to users
    # single-image-datamodule (Zero-1-to-3): the input image (the published one is not shipped)
    # and the sizes and view counts of its novel-view cameras
    "data.image_path",
    "data.random_camera.height",
    "data.random_camera.width",
    "data.random_camera.eval_height",
    "data.random_camera.eval_width",
    "data.random_camera.batch_size",
    "data.random_camera.n_val_views",
    "data.random_camera.n_test_views",
    # multiview-camera-datamodule (Instruct-NeRF2NeRF): the scene folder (the published value is
    # ???, a scene users capture), the LPIPS network's weights (random: none offline, like the
    # tiny models) and the patch renderer's wrapped renderer's samples per ray
    "data.dataroot",
    "system.perceptual_loss.random_weights",
    "system.renderer.base_renderer.num_samples_per_ray",
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
        *row.flags,
    ]
    if _needs_prompt(path):
        argv.append(f"system.prompt_processor.prompt={PROMPT}")
    argv += [f"{key}={tiny_models(kind)}" for key, kind in row.models.items()]
    argv += list(row.overrides)
    if handover is not None:
        argv.append(f"{row.handover}={handover}")
    return argv


def _trial_dir(workdir: Path, config_name: str) -> Path:
    # known before training: exp_root_dir/<name>/<tag>
    return workdir / "outputs" / config_name / "run"


def _eval_runs(trial: Path, row: Row) -> List[List[str]]:
    """--test and --export as users run them: from the trial's parsed.yaml and checkpoint."""
    parsed, ckpt = trial / "configs" / "parsed.yaml", trial / "ckpts" / "last.ckpt"
    stages = ("--test", "--export") if row.export else ("--test",)
    return [
        ["--config", str(parsed), stage, "--gpu", "0", f"resume={ckpt}", *row.flags]
        for stage in stages
    ]


def _config_job(name: str, root: Path, tiny_models) -> Dict[str, Any]:
    row = ROWS[name]
    workdir = root / "configs" / name.replace("/", "__")
    workdir.mkdir(parents=True, exist_ok=True)
    path = CONFIGS / f"{name}.yaml"
    handover = None
    if row.after is not None:
        handover = _config_job(row.after, root, tiny_models)["trial"] / "ckpts" / "last.ckpt"
    trial = _trial_dir(workdir, str(OmegaConf.load(path).name))
    train = _train_argv(path, row, workdir, tiny_models, handover)
    return {
        "name": name,
        "after": row.after,
        "workdir": workdir,
        "trial": trial,
        "runs": [train, *_eval_runs(trial, row)],
        "flags": row.flags,
    }


def _copy_job(name: str, root: Path, tiny_models) -> Dict[str, Any]:
    from tests.test_published_configs import PUBLISHED, fills, unflatten

    row = PUBLISHED_COPIES[name]
    table = dict(PUBLISHED[name])
    workdir = root / "copies" / name.replace("/", "__")
    path = workdir / os.path.basename(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(unflatten(table)))
    handover = None
    if row.after is not None:
        handover = _config_job(row.after, root, tiny_models)["trial"] / "ckpts" / "last.ckpt"
    argv = _train_argv(path, row, workdir, tiny_models, handover)
    given = {a.split("=", 1)[0] for a in argv}
    argv += [f"{k}={v}" for k, v in fills(table).items() if k not in given]
    return {
        "name": f"copy:{name}",
        "after": row.after,
        "workdir": workdir,
        "trial": _trial_dir(workdir, str(table["name"])),
        "runs": [argv],
        "flags": row.flags,
    }


def _selected(session, test_name: str) -> List[str]:
    return [
        item.callspec.params["name"]
        for item in session.items
        if getattr(item, "originalname", None) == test_name
        and getattr(item, "module", None) is not None
        and item.module.__name__ == __name__
        and "name" in getattr(getattr(item, "callspec", None), "params", {})
    ]


def _run_batch(jobs: List[Dict[str, Any]], root: Path, label: str) -> Dict[str, Any]:
    spec = {
        "jobs": [
            {
                "name": j["name"],
                "runs": j["runs"],
                "after": j["after"],
                "log": str(j["workdir"] / "launch.log"),
            }
            for j in jobs
        ],
        "results": str(root / f"results-{label}.json"),
    }
    spec_path = root / f"jobs-{label}.json"
    spec_path.write_text(json.dumps(spec, default=str))
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["THREESTUDIO_CACHE_DIR"] = str(root / "cache")
    proc = subprocess.run(
        [sys.executable, SEQUENCE, str(spec_path)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    results_path = Path(spec["results"])
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for j in jobs:
        results.setdefault(j["name"], f"not run (the batch ended: {proc.stderr[-2000:]})")
    return results


@pytest.fixture(scope="session")
def every_config_runs(request, tmp_path_factory, tiny_models):
    """Every selected config (and the stages they start from) and published copy, run in one
    process: the imports are paid once instead of once per config. Rows with launch flags (e.g.
    --typecheck, which must hook the imports) run in a process of their own."""
    root = tmp_path_factory.mktemp("every_config")
    jobs: Dict[str, Dict[str, Any]] = {}

    def add(job):
        if job["after"] is not None and job["after"] not in jobs:
            add(_config_job(job["after"], root, tiny_models))
        jobs.setdefault(job["name"], job)

    for name in _selected(request.session, "test_config_trains_tests_and_exports"):
        if name in ROWS:
            add(_config_job(name, root, tiny_models))
    for name in _selected(request.session, "test_published_copy_runs_unmodified"):
        add(_copy_job(name, root, tiny_models))
    ordered = list(jobs.values())
    results = {}
    plain = [j for j in ordered if not j["flags"]]
    if plain:
        results.update(_run_batch(plain, root, "plain"))
    for i, job in enumerate(j for j in ordered if j["flags"]):
        results.update(_run_batch([job], root, f"flags{i}"))
    return {name: (results[name], job) for name, job in jobs.items()}


def _result(runs, key: str):
    rc, job = runs[key]
    log = job["workdir"] / "launch.log"
    text = log.read_text() if log.exists() else ""
    assert rc == 0, f"{key} failed ({rc}):\n{text[-4000:]}"
    return job["trial"]


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


@pytest.mark.slow
@pytest.mark.parametrize("name", config_names())
def test_config_trains_tests_and_exports(name, every_config_runs):
    if name not in ROWS:
        pytest.fail(f"{name} has no row in tests/config_runs/")
    trial = _result(every_config_runs, name)
    _check_outputs(name, trial, ROWS[name])
    cfg = yaml.safe_load((trial / "configs" / "parsed.yaml").read_text())
    if ROWS[name].after is not None:
        assert cfg["system"][ROWS[name].handover.split(".")[-1]] is not None


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED_COPIES))
def test_published_copy_runs_unmodified(name, every_config_runs):
    trial = _result(every_config_runs, f"copy:{name}")
    assert (trial / "ckpts" / "last.ckpt").is_file()
