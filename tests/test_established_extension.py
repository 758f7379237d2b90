"""An extension written against the established threestudio API (tests/fixtures/ext_established)
trained through launch.py unmodified: it builds its own guidance and prompt processor (each must be
constructed once), adds its own parameter group after parse_optimizer, reads a schedule list from a
``float`` field, logs every guidance output, trains on a default-collated single-view datamodule
(tensor height/width), and converts its tet-grid geometry stage into a texture stage."""

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

import threestudio
from tests.tiny_pipelines import build_tiny_sd
from tests.tiny_text import make_tiny_clip_text
from threestudio.utils.paths import REPO_ROOT as REPO

LAUNCH = os.path.join(REPO, "launch.py")
FIXTURE = os.path.join(REPO, "tests", "fixtures", "ext_established")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("established")
    shutil.copytree(FIXTURE, root / "custom" / "ext_established")
    sd = build_tiny_sd(root / "models" / "sd")
    make_tiny_clip_text(root / "models" / "sd")
    return root, sd


def launch(root, *args):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["THREESTUDIO_CACHE_DIR"] = str(root / "cache")
    return subprocess.run(
        [sys.executable, LAUNCH, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def metrics(trial):
    rows = list(csv.DictReader(open(trial / "csv_logs" / "version_0" / "metrics.csv")))
    out = {}
    for row in rows:
        for key, value in row.items():
            if value not in ("", None) and key != "step":
                out.setdefault(key, {})[int(row["step"])] = float(value)
    return out


def test_the_datamodule_collates_height_and_width_into_tensors(monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "ext_established_probe", os.path.join(FIXTURE, "__init__.py")
    )
    module = importlib.util.module_from_spec(spec)
    # registered under other names here: the launch runs register the originals in their own
    # processes
    register = threestudio.register
    monkeypatch.setattr(threestudio, "register", lambda name: register(f"{name}-probe"))
    spec.loader.exec_module(module)
    dm = module.SingleViewDataModule({"height": 8, "width": 12})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert torch.is_tensor(batch["height"]) and batch["height"].tolist() == [8]
    assert batch["rays_o"].shape == (1, 8, 12, 3)


@pytest.mark.slow
def test_established_style_extension_trains_and_converts_its_stage(workdir):
    root, sd = workdir
    config = str(root / "custom" / "ext_established" / "established.yaml")
    models = [
        f"system.prompt_processor.pretrained_model_name_or_path={sd}",
        f"system.guidance.pretrained_model_name_or_path={sd}",
    ]
    # stage 1: guidance built in on_fit_start (after super().on_fit_start())
    proc = launch(root, "--config", config, "--train", *models)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (geometry_trial,) = sorted((root / "outputs" / "ext-established").glob("geometry@*"))
    save = geometry_trial / "save"
    assert json.load(open(save / "constructed.json")) == {"guidance": 1, "prompt_processor": 1}
    assert (save / "it4-test.mp4").exists() and (save / "it4-0.png").exists()

    # every guidance output was logged; the float field followed its schedule list
    logged = metrics(geometry_trial)
    for key in ("train/loss_sds", "train/timestep", "train/min_step", "train/max_step"):
        assert key in logged and len(logged[key]) == 4, key
    assert logged["train/min_step_percent"][0] == pytest.approx(0.5)
    assert logged["train/min_step_percent"][2] == pytest.approx(0.3)
    assert logged["train/min_step"][3] < logged["train/min_step"][0]  # the guidance's schedule
    assert logged["train/image_height"][0] == 16.0

    # the parameter group the system added itself was optimised
    ckpt = geometry_trial / "ckpts" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert state["exposure"].abs().item() > 0

    # stage 2: a texture stage converted from the tet-grid stage; guidance built in configure()
    proc = launch(
        root,
        "--config",
        config,
        "--train",
        *models,
        "tag=texture",
        "system.build_guidance_in=configure",
        f"system.geometry_convert_from={ckpt}",
        "system.geometry_convert_inherit_texture=true",
        "system.geometry.fix_geometry=true",
        "system.geometry.shape_init=null",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Converting geometry from tetrahedra-sdf-grid" in proc.stderr
    (texture_trial,) = sorted((root / "outputs" / "ext-established").glob("texture@*"))
    assert json.load(open(texture_trial / "save" / "constructed.json")) == {
        "guidance": 1,
        "prompt_processor": 1,
    }
    # the texture stage starts from the geometry stage's surface, exactly
    cfg = yaml.safe_load(open(config))["system"]["geometry"]
    source = threestudio.find("tetrahedra-sdf-grid")(cfg)
    geometry_state = {
        k[len("geometry.") :]: v for k, v in state.items() if k.startswith("geometry.")
    }
    source.load_state_dict(geometry_state)
    expected = source.isosurface()
    start = torch.load(texture_trial / "save" / "fit_start_mesh.pt", weights_only=True)
    assert start["t_pos_idx"].shape[0] > 0
    assert torch.equal(start["t_pos_idx"], expected.t_pos_idx)
    torch.testing.assert_close(start["v_pos"], expected.v_pos.detach(), rtol=0, atol=1e-6)
    texture_state = torch.load(texture_trial / "ckpts" / "last.ckpt", weights_only=True)
    # the geometry stayed fixed; the inherited texture field trained on
    torch.testing.assert_close(texture_state["state_dict"]["geometry.sdf"], state["geometry.sdf"])
    enc = [k for k in state if k.startswith("geometry.encoding")]
    assert enc and any(not torch.equal(texture_state["state_dict"][k], state[k]) for k in enc)
