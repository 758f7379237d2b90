"""configs/bundled/textmesh.yaml, short: TextMesh (an SDF rendered by NeuS, guided by the bundled
pixel model) trains through launch.py, writes its test frames, video and zero-level mesh, and
its SDS loss at a fixed noise level falls as the render moves toward the prompt."""

import pytest

from tests.bundled.recipe_runs import first_last_means, frames_of, run_recipe

# one noise level for every step: at a random timestep the SDS loss's spread (x3 between steps)
# hides the fall of a 30-step run
FIXED_T = ["system.guidance.min_step_percent=0.3", "system.guidance.max_step_percent=0.3"]
SHORT = [
    "data.n_test_views=4",
    "data.eval_width=32",
    "data.eval_height=32",
    "system.geometry.isosurface_resolution=32",
    "system.exporter.texture_size=64",
    "system.prompt_processor.spawn=false",
]


@pytest.mark.slow
def test_short_textmesh_writes_outputs_and_its_loss_falls(tmp_path):
    trial = run_recipe(tmp_path, "textmesh", 30, SHORT + FIXED_T)
    assert trial.path.name.startswith("a_blue_cone@")
    assert len(frames_of(trial)) == 4
    assert (trial.save / "it30-test.mp4").stat().st_size > 0
    for name in ("model.obj", "model.mtl", "texture_kd.jpg"):
        assert (trial.save / "it30-export" / name).stat().st_size > 0, name
    first, last = first_last_means(trial.series("train/loss_sds"), 8)
    print(f"loss_sds at t=300: first 8 steps {first:.1f}, last 8 steps {last:.1f}")
    assert last < 0.95 * first
    assert trial.series("train/loss_eikonal")[-1] < 0.1  # the field stays a distance function
