"""A second stage built from a first stage's checkpoint (Magic3D-style coarse NeRF -> DMTet):
``system.geometry_convert_from`` finds the first stage's parsed.yaml next to its checkpoint."""

import os
import subprocess
import sys

import pytest
import torch
import yaml

from threestudio.utils.paths import REPO_ROOT as REPO

LAUNCH = os.path.join(REPO, "launch.py")
QUICK = [
    "data.width=16",
    "data.height=16",
    "data.eval_width=16",
    "data.eval_height=16",
    "data.n_val_views=1",
    "data.n_test_views=2",
    "trainer.val_check_interval=100",
    "trainer.enable_progress_bar=false",
    "system.export_after_train=false",
]


def run(workdir, *args):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, LAUNCH, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_refine_stage_converts_the_coarse_geometry(tmp_path):
    quickstart = os.path.join(REPO, "configs", "reconstruct-spheres.yaml")
    proc = run(tmp_path, "--config", quickstart, "--train", "trainer.max_steps=60", *QUICK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (coarse,) = sorted((tmp_path / "outputs" / "reconstruct-spheres").iterdir())
    ckpt = coarse / "ckpts" / "last.ckpt"

    # the refine config: same scene, DMTet geometry, rasterizer renderer
    cfg = yaml.safe_load(open(quickstart))
    cfg["name"] = "refine"
    cfg["system"]["geometry_type"] = "tetrahedra-sdf-grid"
    cfg["system"]["geometry"] = {
        "radius": 1.0,
        "isosurface_resolution": 32,
        "isosurface_deformable_grid": True,
        "pos_encoding_config": cfg["system"]["geometry"]["pos_encoding_config"],
        "mlp_network_config": cfg["system"]["geometry"]["mlp_network_config"],
    }
    cfg["system"]["geometry_convert_from"] = str(ckpt)
    cfg["system"]["geometry_convert_inherit_texture"] = True
    cfg["system"]["geometry_convert_override"] = {"isosurface_threshold": "auto"}
    cfg["system"]["renderer_type"] = "nvdiff-rasterizer"
    cfg["system"]["renderer"] = {"context_type": "cuda"}
    cfg["system"]["loss"] = {"lambda_rgb": 1.0, "lambda_mask": 0.1}
    refine_yaml = tmp_path / "refine.yaml"
    refine_yaml.write_text(yaml.safe_dump(cfg))
    # run from another folder: the coarse stage's config is found next to its checkpoint
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run(elsewhere, "--config", str(refine_yaml), "--train", "trainer.max_steps=2", *QUICK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Converting geometry from implicit-volume" in proc.stderr
    (refine,) = sorted((elsewhere / "outputs" / "refine").iterdir())
    state = torch.load(refine / "ckpts" / "last.ckpt", weights_only=True)["state_dict"]
    coarse_state = torch.load(ckpt, weights_only=True)["state_dict"]
    # the texture field was inherited from the coarse stage, then trained on
    assert "geometry.sdf" in state
    enc = [k for k in coarse_state if k.startswith("geometry.encoding")]
    assert enc and all(k in state for k in enc)
    # the converted surface sits where the coarse field's surface is: some vertices inside,
    # some outside (a sign change exists on the grid)
    sdf = state["geometry.sdf"]
    assert (sdf < 0).any() and (sdf > 0).any()
    assert (refine / "save" / "it2-test.mp4").exists()

    # a missing parsed.yaml next to the checkpoint is a one-line error
    lonely = tmp_path / "lonely.ckpt"
    lonely.write_bytes(ckpt.read_bytes())
    cfg["system"]["geometry_convert_from"] = str(lonely)
    refine_yaml.write_text(yaml.safe_dump(cfg))
    proc = run(elsewhere, "--config", str(refine_yaml), "--train", "trainer.max_steps=2", *QUICK)
    assert proc.returncode == 2 and "parsed.yaml not found" in proc.stderr
