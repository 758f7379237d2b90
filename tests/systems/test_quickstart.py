"""The README's main job, short: configs/quickstart.yaml runs text-to-3D with the bundled model
through launch.py and leaves a turntable video, a textured mesh and an evaluable trial."""

import json
import os
import subprocess
import sys

import pytest

from threestudio.bundled import evaluation
from threestudio.utils.paths import REPO_ROOT as REPO


@pytest.mark.slow
def test_short_quickstart_writes_video_and_mesh(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [
            sys.executable, "launch.py", "--config", "configs/quickstart.yaml", "--train",
            "trainer.max_steps=12", "data.n_test_views=6", "trainer.enable_progress_bar=false",
            "system.prompt_processor.prompt=a green cube", f"exp_root_dir={tmp_path}",
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "never saw" not in proc.stderr + proc.stdout
    # the quickstart's framing (data.eval_fit_mode=contain) looked at the trained object
    assert "(data.eval_fit_mode=contain, share 0.9)" in proc.stderr + proc.stdout
    (trial,) = (tmp_path / "quickstart").iterdir()
    assert trial.name.startswith("a_green_cube@")
    save = trial / "save"
    assert (save / "it12-test.mp4").stat().st_size > 0
    assert len(list((save / "it12-test").glob("*.png"))) == 6
    export = save / "it12-export"
    for name in ("model.obj", "model.mtl", "texture_kd.jpg"):
        assert (export / name).stat().st_size > 0, name
    # the trial is ready for the evaluation command
    assert evaluation.main([str(trial)]) == 0
    result = json.loads((trial / "evaluation.json").read_text())
    assert result["prompt"] == "a green cube" and result["n_views"] == 6
    assert result["in_frame"] == 1.0  # every view holds the whole object
