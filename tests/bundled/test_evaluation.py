"""R-precision evaluation: the score arithmetic, the CLIP scorer on a tiny random CLIP loaded
from disk, and the command line on a trial folder of known renders scored by the bundled
classifier."""

import json
import os

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.tiny_text import make_tiny_clip
from threestudio.bundled import evaluation
from threestudio.bundled.shapes import all_prompts, render_shape_dataset
from threestudio.utils.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_r_precision_counts_top1_hits():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.4, 0.6], [0.3, 0.2, 0.1]])
    assert evaluation.r_precision(scores, 0) == pytest.approx(0.5)
    assert evaluation.r_precision(scores, 1) == pytest.approx(0.25)
    assert evaluation.r_precision(scores, 2) == pytest.approx(0.25)


def test_clip_scorer_is_the_cosine_of_clip_features(tmp_path):
    folder = make_tiny_clip(tmp_path / "clip")
    scorer = evaluation.CLIPScorer(str(folder))
    images = torch.rand(3, 48, 48, 3)
    prompts = ["a red cube", "a blue cone", "the hamburger"]
    scores = scorer(images, prompts)
    assert scores.shape == (3, 3)

    # by hand: resize to the model's size, normalise with CLIP's statistics, project, cosine
    model = scorer.model
    x = F.interpolate(images.permute(0, 3, 1, 2), (32, 32), mode="bicubic").clamp(0, 1)
    mean = torch.tensor(evaluation.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(evaluation.CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        vision = model.vision_model(pixel_values=(x - mean) / std).pooler_output
        img = F.normalize(model.visual_projection(vision), dim=-1)
        tok = scorer.tokenizer(prompts, padding=True, return_tensors="pt")
        text = model.text_model(**tok).pooler_output
        txt = F.normalize(model.text_projection(text), dim=-1)
    torch.testing.assert_close(scores, img @ txt.T, atol=1e-5, rtol=1e-4)


def test_clip_scorer_names_a_missing_model(tmp_path):
    with pytest.raises(UserError, match="nowhere"):
        evaluation.CLIPScorer(str(tmp_path / "nowhere"))


def _fake_trial(root, prompt: str, images: torch.Tensor):
    """A trial folder as launch.py leaves it: parsed config and rgb|opacity test panels."""
    trial = root / "trial"
    (trial / "configs").mkdir(parents=True)
    (trial / "configs" / "parsed.yaml").write_text(
        f"system:\n  prompt_processor:\n    prompt: {prompt}\n"
    )
    test = trial / "save" / "it100-test"
    test.mkdir(parents=True)
    (trial / "save" / "it50-test").mkdir()  # an older test stage: ignored
    for i, img in enumerate(images):
        rgb = (img.numpy() * 255).round().astype(np.uint8)
        panel = np.concatenate([rgb, np.zeros_like(rgb)], axis=1)  # rgb | black opacity
        imageio.imwrite(test / f"{i}.png", panel)
    return trial


@pytest.mark.parametrize("prompt", ["a red cube", "a purple torus"])
def test_cli_scores_renders_of_the_prompt_high_and_writes_the_result(tmp_path, prompt, capsys):
    data = render_shape_dataset(6, 64, 64, seed=7, batch_size=6, progress=False)
    index = all_prompts().index(prompt)
    views = data.images[index * 6 : (index + 1) * 6].float() / 255.0
    trial = _fake_trial(tmp_path, prompt, views)
    assert evaluation.main([str(trial)]) == 0
    result = json.loads((trial / "evaluation.json").read_text())
    assert result["prompt"] == prompt and result["step"] == 100 and result["n_views"] == 6
    assert result["n_prompts"] == 30
    assert result["r_precision"] >= 5 / 6
    assert 0.5 < result["confidence"] <= 1.0
    assert 0.0 < result["min_view_confidence"] <= result["confidence"]
    assert result["in_frame"] == 1.0  # the fake panels' opacity is black
    assert "R-precision" in capsys.readouterr().out


def test_cli_r_precision_is_low_for_the_wrong_prompt(tmp_path):
    data = render_shape_dataset(6, 32, 32, seed=7, batch_size=6, progress=False)
    index = all_prompts().index("a green sphere")
    views = data.images[index * 6 : (index + 1) * 6].float() / 255.0
    trial = _fake_trial(tmp_path, "a yellow cone", views)
    assert evaluation.main([str(trial)]) == 0
    result = json.loads((trial / "evaluation.json").read_text())
    assert result["r_precision"] <= 1 / 6
    assert result["confidence"] < 0.2
    assert next(iter(result["top_prompts"])) == "a green sphere"


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert evaluation.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "configs/parsed.yaml" in err
    trial = _fake_trial(tmp_path, "a hamburger", torch.rand(2, 32, 32, 3))
    assert evaluation.main([str(trial)]) == 2
    err = capsys.readouterr().err.strip()
    assert "a hamburger" in err and "--scorer clip" in err


def test_share_in_frame_reads_the_opacity_panel_ring(tmp_path):
    h = 16
    rgb = np.full((h, h, 3), 255, dtype=np.uint8)
    inside = np.zeros((h, h, 3), dtype=np.uint8)
    inside[4:12, 4:12] = 255  # an object clear of the edges
    touching = inside.copy()
    touching[6:10, 0:4] = 255  # reaches the left edge
    paths = []
    for i, opacity in enumerate([inside, touching, inside, inside]):
        path = tmp_path / f"{i}.png"
        imageio.imwrite(path, np.concatenate([rgb, rgb, opacity], axis=1))
        paths.append(str(path))
    assert evaluation.share_in_frame(evaluation.read_views(paths)) == 0.75
    single = tmp_path / "single.png"
    imageio.imwrite(single, rgb)
    assert evaluation.share_in_frame(evaluation.read_views([str(single)])) is None
