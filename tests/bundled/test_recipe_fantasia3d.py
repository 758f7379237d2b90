"""configs/bundled/fantasia3d.yaml then fantasia3d-texture.yaml, short: the geometry stage (a DMTet
surface seen lit in one learnt colour, guided by the bundled latent model) trains through
launch.py, its colour turning to the prompt's, and exports its mesh; the texture stage
starts from its checkpoint, writes test frames, video and a textured mesh. Neither stage's SDS
loss falls robustly in so few steps (measured at a fixed t = 300: geometry, 20 steps, first 8
85.6, last 8 90.4; texture, 30 steps, first 8 79.3, last 8 79.7), so losses are checked finite
and the geometry stage by its colour."""

import math

import pytest
import torch

from tests.bundled.recipe_runs import first_last_means, frames_of, run_recipe

SHORT = [
    "data.n_test_views=4",
    "data.eval_width=32",
    "data.eval_height=32",
    "system.geometry.isosurface_resolution=32",
    "system.prompt_processor.spawn=false",
]
# one noise level for every step (the SDS loss at random timesteps spreads x3 between steps)
FIXED_T = ["system.guidance.min_step_percent=0.3", "system.guidance.max_step_percent=0.3"]
# a short fit of the sphere prior
GEOMETRY = ["system.geometry.shape_init_steps=30"]


@pytest.mark.slow
def test_short_fantasia3d_geometry_then_texture(tmp_path):
    geometry = run_recipe(tmp_path / "geometry", "fantasia3d", 20, SHORT + GEOMETRY + FIXED_T)
    assert geometry.path.name.startswith("a_red_cube@")
    assert (geometry.save / "it20-export" / "model.obj").stat().st_size > 0
    # the lit render's one colour starts grey and is pulled towards the prompt's red
    ckpt = geometry.path / "ckpts" / "last.ckpt"
    logit = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]["shaded_color"]
    r, g, b = torch.sigmoid(logit).tolist()
    print(f"geometry stage's colour after 20 steps: {r:.2f} {g:.2f} {b:.2f}")
    assert r - max(g, b) > 0.1
    assert len(frames_of(geometry)) == 4

    texture = run_recipe(
        tmp_path / "texture",
        "fantasia3d-texture",
        30,
        SHORT
        + FIXED_T
        + ["system.exporter.texture_size=64", f"system.geometry_convert_from={ckpt}"],
    )
    assert len(frames_of(texture)) == 4
    assert (texture.save / "it30-test.mp4").stat().st_size > 0
    for name in ("model.obj", "model.mtl", "texture_kd.jpg"):
        assert (texture.save / "it30-export" / name).stat().st_size > 0, name
    first, last = first_last_means(texture.series("train/loss_sds"), 8)
    print(f"texture loss_sds at t=300: first 8 steps {first:.2f}, last 8 steps {last:.2f}")
    assert math.isfinite(first) and math.isfinite(last)
