"""The bundled tiny text-to-image model (load/tiny-shapes): it loads through the real DeepFloyd
guidance and prompt processor, its samples are what the prompts ask for (judged by the bundled
classifier), unknown words are reported, and the training recipe lowers its loss."""

import logging
import os

import pytest
import torch

import threestudio
from threestudio.bundled import tiny_model as bm
from threestudio.bundled.classifier import ShapeColorClassifier
from threestudio.bundled.shapes import COLORS, SHAPES, all_prompts, render_shape_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODEL = bm.BUNDLED_MODEL_PATH

# bars set from measurement (see load/tiny-shapes/README.md and benchmarks/RESULTS.md)
SAMPLE_BAR = 0.85  # of 30 prompts x 2 seeds, the classifier names the sample right (1.0 measured)


def test_bundled_model_is_small_and_complete():
    size = sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(MODEL) for f in files
    )
    assert size < 25 * 2**20
    for part in ("unet", "text_encoder", "tokenizer", "scheduler", "classifier"):
        assert os.path.isdir(os.path.join(MODEL, part)), part
    for name in ("README.md", "samples.png", "vocabulary.json", "model_index.json"):
        assert os.path.isfile(os.path.join(MODEL, name)), name


@pytest.mark.slow
def test_samples_through_the_real_guidance_are_recognised(tmp_path):
    guidance = threestudio.find("deep-floyd-guidance")(
        {"pretrained_model_name_or_path": MODEL, "guidance_scale": 3.0}
    )
    assert guidance.image_size == 32
    encode = threestudio.find("deep-floyd-prompt-processor").encode_prompts
    prompts = all_prompts()
    embeddings = encode(MODEL, prompts + [""], "cpu")
    cond, uncond = embeddings[:-1], embeddings[-1:]
    samples = torch.cat(
        [
            bm.sample_images(guidance.unet, guidance.scheduler, cond, uncond, 3.0, 50, seed=s)
            for s in range(2)
        ]
    )
    classifier = ShapeColorClassifier.load(os.path.join(MODEL, "classifier"))
    with torch.no_grad():
        predicted = classifier.prompt_log_probs(samples).argmax(-1)
    target = torch.arange(len(prompts)).repeat(2)
    accuracy = (predicted == target).float().mean().item()
    print(f"bundled model: {accuracy:.3f} of samples recognised")
    assert accuracy >= SAMPLE_BAR

    # an SDS step on a 32x32 render through the guidance gives a finite gradient
    pp = threestudio.find("deep-floyd-prompt-processor")(
        {"pretrained_model_name_or_path": MODEL, "prompt": "a red cube", "spawn": False}
    )
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    zeros = torch.zeros(2)
    out = guidance(rgb, pp(), zeros + 10, zeros, zeros + 1.75)
    out["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def test_unknown_words_get_one_warning_listing_the_known_ones(caplog):
    with caplog.at_level(logging.WARNING):
        threestudio.find("deep-floyd-prompt-processor")(
            {"pretrained_model_name_or_path": MODEL, "prompt": "a blue hamburger", "spawn": False}
        )
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    (line,) = [m for m in lines if "never saw" in m]
    assert "hamburger" in line and "blue" not in line.split("it knows")[0]
    for word in list(COLORS) + list(SHAPES):
        assert word in line.split("it knows")[1]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        threestudio.find("deep-floyd-prompt-processor")(
            {"pretrained_model_name_or_path": MODEL, "prompt": "a blue torus", "spawn": False}
        )
    assert not [r for r in caplog.records if "never saw" in r.getMessage()]


@pytest.mark.slow
def test_training_recipe_lowers_the_loss():
    data = render_shape_dataset(4, 16, 16, seed=1, batch_size=4, progress=False)
    *_, history = bm.train_diffusion(data, steps=60, batch_size=16, lr=2e-3, progress=False)
    first, last = sum(history[:10]) / 10, sum(history[-10:]) / 10
    assert last < 0.7 * first, (first, last)


def test_tokenizer_speaks_the_prompt_processor_language():
    tokenizer = bm.build_tokenizer()
    ids = tokenizer("a red cube, front view").input_ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.convert_ids_to_tokens(ids)[:3] == ["▁a", "▁red", "▁cube"]
    assert tokenizer.unk_token_id in tokenizer("a hamburger").input_ids


@pytest.mark.slow
def test_training_script_rebuilds_a_loadable_model(tmp_path):
    from scripts.train_tiny_model import main

    out = tmp_path / "model"
    main(
        [
            "--out", str(out), "--work-dir", str(tmp_path / "work"), "--views-per-object", "8",
            "--heldout-views-per-object", "2", "--steps", "5", "--sample-seeds", "1",
            "--classifier-epochs", "1",
        ]
    )  # fmt: skip
    card = (out / "README.md").read_text()
    assert "--steps 5" in card and "Words it knows" in card
    guidance = threestudio.find("deep-floyd-guidance")({"pretrained_model_name_or_path": str(out)})
    assert guidance.image_size == 32
    assert ShapeColorClassifier.load(str(out / "classifier")) is not None
