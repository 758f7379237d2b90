"""The bundled SJC recipe, short (configs/bundled/sjc.yaml): a voxel grid of density and latents
trained by the bundled latent model's score; it leaves test frames (decoded by the VAE) and a
video, and its loss falls. The recipe's own weights give a loss that 30 steps cannot show
falling (the score at random noise dominates it: measured 560 -> 557 over the first and last
10 steps), so the short run takes the published start and emptiness weight (a uniform fog,
1e4), whose loss the score and the emptiness prior carve down within 30 steps (836 -> 576)."""

import pytest

from tests.bundled.recipe_runs import first_last_means, frames_of, run_recipe

pytestmark = pytest.mark.slow

STEPS = 30


def test_sjc_recipe(tmp_path):
    published = ["system.geometry.density_bias=-1.0", "system.loss.lambda_emptiness=10000."]
    trial = run_recipe(
        tmp_path, "sjc", STEPS, ["data.n_test_views=4", "data.n_val_views=1", *published]
    )
    assert len(frames_of(trial)) == 4
    assert (trial.save / f"it{STEPS}-test.mp4").is_file()
    assert (trial.path / "ckpts" / "last.ckpt").is_file()
    first, last = first_last_means(trial.series("train/loss"), 10)
    print(f"sjc loss: first 10 {first:.4f}, last 10 {last:.4f}")
    assert last < first
