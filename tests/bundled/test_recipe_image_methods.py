"""The bundled image-to-3D recipes, short, through launch.py: Zero-1-to-3
(configs/bundled/zero123.yaml, the bundled novel-view model) and Magic123
(configs/bundled/magic123-coarse.yaml, the bundled latent model as 2D prior and the novel-view
model as 3D prior). Each fits the reference view and writes the test frames, the video and the
mesh."""

import pytest

from tests.bundled.recipe_runs import first_last_means, frames_of, run_recipe

STEPS = 20


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, rgb_loss",
    [
        ("zero123", "train_ref/loss_rgb"),  # zero123-system logs the reference view apart
        ("magic123-coarse", "train/loss_rgb"),
    ],
)
def test_bundled_image_recipe_short_run(tmp_path, config, rgb_loss):
    trial = run_recipe(
        tmp_path,
        config,
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
    first, last = first_last_means(trial.series(rgb_loss), 3)
    print(f"{rgb_loss}: first 3 steps {first:.4f}, last 3 {last:.4f}")
    assert last < 0.7 * first
