"""The bundled latent text-to-image model (load/tiny-shapes-sd): a Stable Diffusion folder that
loads through the real SD guidances and prompt processor, whose samples are what the prompts ask
for (judged by the world's classifier), and whose training recipe lowers its losses."""

import json
import os

import pytest
import torch

import threestudio
from threestudio.bundled import latent_model as lm
from threestudio.bundled.classifier import ShapeColorClassifier
from threestudio.bundled.shapes import all_prompts, known_words, render_shape_dataset
from threestudio.bundled.tiny_model import BUNDLED_MODEL_PATH

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODEL = lm.LATENT_MODEL_PATH
CLASSIFIER = os.path.join(BUNDLED_MODEL_PATH, "classifier")
SAMPLE_BAR = 0.85  # of the 30 prompts (one seed), the classifier names the sample right


def test_bundled_latent_model_is_small_and_complete():
    size = sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(MODEL) for f in files
    )
    assert size < 25 * 2**20
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert os.path.isdir(os.path.join(MODEL, part)), part
    for name in ("README.md", "samples.png", "vocabulary.json", "model_index.json"):
        assert os.path.isfile(os.path.join(MODEL, name)), name
    with open(os.path.join(MODEL, "model_index.json")) as f:
        assert json.load(f)["_class_name"] == "StableDiffusionPipeline"


def test_tokenizer_spells_each_world_word_as_one_token():
    tokenizer = lm.build_clip_tokenizer()
    for word in known_words() + [","]:
        pieces = tokenizer.convert_ids_to_tokens(tokenizer(word).input_ids)
        assert pieces == ["<|startoftext|>", word + "</w>", "<|endoftext|>"], pieces
    # other words are spelt out, not dropped
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("a hamburger").input_ids)[1:-1]
    assert "".join(pieces).replace("</w>", " ").split() == ["a", "hamburger"]
    assert len(pieces) > 2


@pytest.mark.slow
def test_samples_through_the_real_guidance_are_recognised():
    guidance = threestudio.find("stable-diffusion-guidance")(
        {"pretrained_model_name_or_path": MODEL, "guidance_scale": 5.0}
    )
    assert (guidance.image_size, guidance.latent_size) == (32, 16)
    encode = threestudio.find("stable-diffusion-prompt-processor").encode_prompts
    prompts = all_prompts()
    embeddings = encode(MODEL, prompts + [""], "cpu")
    cond, uncond = embeddings[:-1], embeddings[-1:]
    samples = lm.sample_latent_images(
        guidance.unet, guidance.vae, guidance.scheduler, cond, uncond, 5.0, 50, seed=0
    )
    classifier = ShapeColorClassifier.load(CLASSIFIER)
    with torch.no_grad():
        predicted = classifier.prompt_log_probs(samples).argmax(-1)
    target = torch.arange(len(prompts))
    accuracy = (predicted == target).float().mean().item()
    print(f"bundled latent model: {accuracy:.3f} of samples recognised")
    assert accuracy >= SAMPLE_BAR

    # the VAE round-trips a render of the world closely
    data = render_shape_dataset(1, 32, 32, seed=5, progress=False)
    images = data.images.permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        decoded = guidance.decode_latents(guidance.encode_images(images))
    assert (decoded - images).abs().mean() < 0.03

    # an SDS step on a 32x32 render gives a finite gradient
    pp = threestudio.find("stable-diffusion-prompt-processor")(
        {"pretrained_model_name_or_path": MODEL, "prompt": "a red cube", "spawn": False}
    )
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    zeros = torch.zeros(2)
    out = guidance(rgb, pp(), zeros + 10, zeros, zeros + 1.75)
    out["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0

    # ProlificDreamer's guidance loads it as its base and as its LoRA branch
    vsd = threestudio.find("stable-diffusion-vsd-guidance")(
        {"pretrained_model_name_or_path": MODEL, "pretrained_model_name_or_path_lora": MODEL}
    )
    eye = torch.eye(4)[None].repeat(2, 1, 1)
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    out = vsd(rgb, pp(), zeros + 10, zeros, zeros + 1.75, mvp_mtx=eye, c2w=eye)
    (out["loss_vsd"] + out["loss_lora"]).backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


@pytest.mark.slow
def test_training_recipe_lowers_both_losses():
    data = render_shape_dataset(4, 16, 16, seed=1, batch_size=4, progress=False)
    vae, vae_history = lm.train_vae(data, steps=40, batch_size=8, lr=2e-3, progress=False)
    assert sum(vae_history[-5:]) < 0.5 * sum(vae_history[:5]), vae_history
    # the scaling factor makes the latents unit-variance, as the guidances expect
    mean, _ = lm.encode_dataset(vae, data)
    assert abs((mean * vae.config.scaling_factor).std().item() - 1.0) < 0.1
    *_, history = lm.train_latent_diffusion(
        data, vae, steps=60, batch_size=16, lr=2e-3, progress=False
    )
    first, last = sum(history[:10]) / 10, sum(history[-10:]) / 10
    print(f"autoencoder {vae_history[:5]} -> {vae_history[-5:]}; diffusion {first} -> {last}")
    assert last < 0.8 * first, (first, last)
