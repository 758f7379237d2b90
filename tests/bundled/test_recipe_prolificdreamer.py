"""configs/bundled/prolificdreamer.yaml, short: the coarse VSD stage (a NeRF scored by the bundled
latent model against its LoRA copy, fitted on the fly) trains through launch.py, writes its test
frames, video and mesh, and its LoRA branch learns the renders (its denoising loss falls)."""

import pytest

from tests.bundled.recipe_runs import first_last_means, frames_of, run_recipe

SHORT = [
    "data.n_test_views=4",
    "data.eval_width=32",
    "data.eval_height=32",
    "system.geometry.isosurface_resolution=32",
    "system.exporter.texture_size=64",
    "system.prompt_processor.spawn=false",
]


@pytest.mark.slow
def test_short_prolificdreamer_writes_outputs_and_its_loss_falls(tmp_path):
    trial = run_recipe(tmp_path, "prolificdreamer", 30, SHORT)
    assert trial.path.name.startswith("a_red_cube@")
    assert len(frames_of(trial)) == 4
    assert (trial.save / "it30-test.mp4").stat().st_size > 0
    for name in ("model.obj", "model.mtl", "texture_kd.jpg"):
        assert (trial.save / "it30-export" / name).stat().st_size > 0, name
    first, last = first_last_means(trial.series("train/loss_lora"), 8)
    print(f"loss_lora: first 8 steps {first:.3f}, last 8 steps {last:.3f}")
    assert last < 0.95 * first
