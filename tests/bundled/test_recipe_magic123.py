"""The bundled Magic123 recipe (configs/bundled/magic123-coarse.yaml): a short run through
launch.py with the bundled latent model (2D prior) and novel-view model (3D prior) fits the
reference view and writes the test frames, the video and the mesh."""

import pytest

from tests.bundled.recipe_runs import first_last_means, frames_of, run_recipe

STEPS = 20


@pytest.mark.slow
def test_bundled_magic123_short_run(tmp_path):
    trial = run_recipe(
        tmp_path,
        "magic123-coarse",
        STEPS,
        [
            "data.random_camera.n_test_views=4",
            "data.random_camera.eval_height=32",
            "data.random_camera.eval_width=32",
            "system.exporter.texture_size=64",
            "system.geometry.isosurface_resolution=32",
        ],
    )
    assert len(frames_of(trial)) == 4
    assert (trial.save / f"it{STEPS}-test.mp4").is_file()
    assert list((trial.save / f"it{STEPS}-export").glob("*.obj"))
    # the reference view is fitted: its RGB loss falls
    first, last = first_last_means(trial.series("train/loss_rgb"), 3)
    print(f"train/loss_rgb: first 3 steps {first:.4f}, last 3 {last:.4f}")
    assert last < 0.7 * first
