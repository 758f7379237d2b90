"""The bundled Latent-NeRF recipe, short: the latent stage (configs/bundled/latentnerf.yaml)
renders 4-channel latents that the bundled latent model scores directly and whose test frames its
VAE decodes; the RGB refinement (configs/bundled/latentnerf-refine.yaml) starts from its weights.
Each leaves test frames and a video, and its loss falls."""

import numpy as np
import pytest
from PIL import Image

from tests.bundled.recipe_runs import first_last_means, frames_of, run_recipe

pytestmark = pytest.mark.slow

EVAL = ["data.n_test_views=4", "data.n_val_views=1"]
LATENT_STEPS = 40
REFINE_STEPS = 20


@pytest.fixture(scope="module")
def latent(tmp_path_factory):
    return run_recipe(tmp_path_factory.mktemp("latent"), "latentnerf", LATENT_STEPS, EVAL)


def assert_outputs(trial):
    frames = frames_of(trial)
    assert len(frames) == 4
    assert (trial.save / f"it{trial.step}-test.mp4").is_file()
    assert (trial.path / "ckpts" / "last.ckpt").is_file()
    return frames


def test_latent_stage(latent):
    frames = assert_outputs(latent)
    # the VAE's decoding of the latent render: an RGB picture on the world's white background
    rgb = np.asarray(Image.open(frames[0]).convert("RGB"), dtype=np.float32) / 255.0
    corner = rgb[:8, :8].mean()
    print(f"decoded frame corner brightness {corner:.3f}")
    assert corner > 0.8
    first, last = first_last_means(latent.series("train/loss_sds"), 10)
    print(f"latent loss_sds: first 10 {first:.4f}, last 10 {last:.4f}")
    assert last < first


def test_refine_stage_from_the_latent_weights(latent, tmp_path):
    ckpt = latent.path / "ckpts" / "last.ckpt"
    refine = run_recipe(
        tmp_path, "latentnerf-refine", REFINE_STEPS, EVAL + [f"system.weights={ckpt}"]
    )
    assert_outputs(refine)
    first, last = first_last_means(refine.series("train/loss_sds"), 5)
    print(f"refine loss_sds: first 5 {first:.4f}, last 5 {last:.4f}")
    assert last < first
