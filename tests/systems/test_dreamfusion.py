"""DreamFusion through launch.py exactly as users run it, with tiny random models substituted by
dotted overrides (the configs' own modules otherwise unchanged)."""

import csv
import os
import re
import shlex
import subprocess
import sys

import imageio.v2 as imageio
import pytest
import torch
import trimesh

from tests.tiny_pipelines import build_tiny_if, build_tiny_sd
from tests.tiny_text import make_tiny_clip_text, make_tiny_t5_text
from threestudio.utils.paths import REPO_ROOT as REPO

LAUNCH = os.path.join(REPO, "launch.py")

SMALL = [
    "data.width=16",
    "data.height=16",
    "data.eval_width=16",
    "data.eval_height=16",
    "data.n_val_views=1",
    "data.n_test_views=3",
    "trainer.val_check_interval=3",
    "trainer.enable_progress_bar=false",
    "system.renderer.num_samples_per_ray=32",
    "system.geometry.pos_encoding_config.n_levels=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
    "system.geometry.isosurface_resolution=32",
    "system.geometry.isosurface_threshold=auto",
    "system.exporter.texture_size=64",
    "system.prompt_processor.spawn=false",
]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    sd = build_tiny_sd(root / "sd")
    make_tiny_clip_text(root / "sd")
    if_ = build_tiny_if(root / "if")
    make_tiny_t5_text(root / "if")
    return {"sd": sd, "if": if_}


def run(workdir, *args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["THREESTUDIO_CACHE_DIR"] = str(workdir / "cache")
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, LAUNCH, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def model_overrides(path):
    return [
        f"system.prompt_processor.pretrained_model_name_or_path={path}",
        f"system.guidance.pretrained_model_name_or_path={path}",
    ]


def only_trial(workdir, name):
    (trial,) = sorted((workdir / "outputs" / name).iterdir())
    return trial


@pytest.mark.slow
@pytest.mark.parametrize(
    "config,model",
    # every config trains, tests and exports in tests/test_every_config.py; these two check
    # the library prompt's trial name and the video's panels (with and without normals)
    [("dreamfusion-sd", "sd"), ("dreamfusion-wonormal", "sd")],
)
def test_config_trains_tests_and_exports(tmp_path, tiny_models, config, model):
    proc = run(
        tmp_path,
        "--config",
        os.path.join(REPO, "configs", f"{config}.yaml"),
        "--train",
        "--gpu",
        "0",
        "system.prompt_processor.prompt=lib:delicious_hamburger",
        "trainer.max_steps=3",
        "system.export_after_train=true",
        *model_overrides(tiny_models[model]),
        *SMALL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    if "CUDA" not in os.environ.get("CUDA_VISIBLE_DEVICES", "x"):
        assert proc.stderr.count("running on the CPU") == 1
    assert "a delicious hamburger" in proc.stderr  # the library prompt that was used
    trial = only_trial(tmp_path, config)
    assert trial.name.startswith("lib:delicious_hamburger@")
    video = imageio.mimread(str(trial / "save" / "it3-test.mp4"))
    # rgb, normal (when the material uses normals) and opacity panels side by side
    panels = 2 if config == "dreamfusion-wonormal" else 3
    assert len(video) == 3 and video[0].shape[:2] == (16, 16 * panels)
    mesh = trimesh.load(
        str(trial / "save" / "it3-export" / "model.obj"), force="mesh", process=False
    )
    assert len(mesh.faces) > 0
    assert (trial / "save" / "it3-export" / "model.mtl").exists()


def losses(trial, version):
    rows = list(csv.DictReader(open(trial / "csv_logs" / f"version_{version}" / "metrics.csv")))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


@pytest.mark.slow
def test_resume_is_exact(tmp_path, tiny_models):
    config = os.path.join(REPO, "configs", "dreamfusion-sd.yaml")
    common = [
        "system.prompt_processor.prompt=a hamburger",
        "checkpoint.every_n_train_steps=3",
        *model_overrides(tiny_models["sd"]),
        *SMALL,  # validates at step 3: evaluation inside the window must not disturb training
    ]
    straight_dir = tmp_path / "straight"
    straight_dir.mkdir()
    proc = run(straight_dir, "--config", config, "--train", "trainer.max_steps=6", *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    straight = only_trial(straight_dir, "dreamfusion-sd")
    straight_losses = losses(straight, 0)
    straight_final = torch.load(straight / "ckpts" / "last.ckpt", weights_only=True)

    split_dir = tmp_path / "split"
    split_dir.mkdir()
    proc = run(split_dir, "--config", config, "--train", "trainer.max_steps=3", *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trial = only_trial(split_dir, "dreamfusion-sd")
    proc = run(
        split_dir,
        "--config",
        str(trial / "configs" / "parsed.yaml"),
        "--train",
        f"resume={trial / 'ckpts' / 'last.ckpt'}",
        "trainer.max_steps=6",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert only_trial(split_dir, "dreamfusion-sd") == trial  # continued in the same trial
    split_losses = {**losses(trial, 0), **losses(trial, 1)}
    assert sorted(split_losses) == list(range(6))
    for step in range(6):
        assert split_losses[step] == straight_losses[step], step
    split_final = torch.load(trial / "ckpts" / "last.ckpt", weights_only=True)
    assert split_final["global_step"] == straight_final["global_step"] == 6
    for key, value in straight_final["state_dict"].items():
        assert torch.equal(split_final["state_dict"][key], value), key

    # --test from the resumed checkpoint names the true step
    proc = run(
        split_dir,
        "--config",
        str(trial / "configs" / "parsed.yaml"),
        "--test",
        f"resume={trial / 'ckpts' / 'last.ckpt'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (trial / "save" / "it6-test.mp4").exists()


@pytest.mark.slow
def test_missing_model_is_one_line_and_leaves_no_trial(tmp_path):
    proc = run(
        tmp_path,
        "--config",
        os.path.join(REPO, "configs", "dreamfusion.yaml"),
        "--train",
        "--gpu",
        "0",
        "system.prompt_processor.prompt=a hamburger",
        "system.prompt_processor.spawn=false",
        env_extra={"HF_HOME": str(tmp_path / "empty_hf_home")},
    )
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    line = errors[0]
    assert "stabilityai/stable-diffusion-2-1-base" in line
    assert "system.guidance.pretrained_model_name_or_path" in line
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs" / "dreamfusion").exists()


def readme_dreamfusion_commands():
    text = open(os.path.join(REPO, "README.md")).read()
    section = text.split("## DreamFusion", 1)[1].split("\n## ", 1)[0]
    return [ln.strip() for ln in section.splitlines() if ln.strip().startswith("python launch.py")]


def test_readme_dreamfusion_commands_parse(tmp_path, monkeypatch):
    """Every DreamFusion command in the README goes through the real argument and config
    parsing and the system's own config classes (no training), so the README cannot drift."""
    sys.path.insert(0, REPO)
    import launch
    import threestudio
    from threestudio.utils.config import load_config, parse_structured

    commands = readme_dreamfusion_commands()
    assert len(commands) >= 4
    monkeypatch.chdir(REPO)
    for command in commands:
        argv = shlex.split(command)[2:]
        args, extras = launch.parse_args(argv)
        cfg = load_config(args.config, cli_args=extras)
        system_cls = threestudio.find(cfg.system_type)
        system_cfg = parse_structured(system_cls.Config, cfg.system)
        for module in (
            "geometry",
            "material",
            "background",
            "renderer",
            "guidance",
            "prompt_processor",
        ):
            module_cls = threestudio.find(system_cfg[f"{module}_type"])
            parse_structured(module_cls.Config, system_cfg[module])
        assert re.match(r"^[\w:\-]+$", cfg.tag.split("@")[0]), cfg.tag
