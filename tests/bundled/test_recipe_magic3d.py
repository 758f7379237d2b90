"""The bundled Magic3D recipe, short: the coarse NeRF (configs/bundled/magic3d-coarse.yaml) a few
steps, then the DMTet refine stage (configs/bundled/magic3d-refine.yaml) from its checkpoint,
both guided by the bundled latent model; each leaves test frames, a video and a mesh, and its
loss falls."""

import pytest

from tests.bundled.recipe_runs import first_last_means, frames_of, run_recipe

pytestmark = pytest.mark.slow

EVAL = ["data.n_test_views=4", "data.n_val_views=1"]
COARSE_STEPS = 40
REFINE_STEPS = 20


@pytest.fixture(scope="module")
def coarse(tmp_path_factory):
    return run_recipe(tmp_path_factory.mktemp("coarse"), "magic3d-coarse", COARSE_STEPS, EVAL)


def assert_outputs(trial):
    assert len(frames_of(trial)) == 4
    assert (trial.save / f"it{trial.step}-test.mp4").is_file()
    assert (trial.save / f"it{trial.step}-export" / "model.obj").is_file()
    assert (trial.path / "ckpts" / "last.ckpt").is_file()


def test_coarse_stage(coarse):
    assert_outputs(coarse)
    first, last = first_last_means(coarse.series("train/loss_sds"), 10)
    print(f"coarse loss_sds: first 10 {first:.4f}, last 10 {last:.4f}")
    assert last < first


def test_refine_stage_from_the_coarse_checkpoint(coarse, tmp_path):
    ckpt = coarse.path / "ckpts" / "last.ckpt"
    # one fixed timestep (t = 300): the score of a random t is too noisy to fall in 20 steps
    fixed_t = ["system.guidance.min_step_percent=0.3", "system.guidance.max_step_percent=0.3"]
    refine = run_recipe(
        tmp_path,
        "magic3d-refine",
        REFINE_STEPS,
        EVAL + fixed_t + [f"system.geometry_convert_from={ckpt}"],
    )
    assert_outputs(refine)
    print("refine loss_sds:", [round(v, 1) for v in refine.series("train/loss_sds")])
    first, last = first_last_means(refine.series("train/loss"), 5)
    print(f"refine loss: first 5 {first:.4f}, last 5 {last:.4f}")
    assert last < first
