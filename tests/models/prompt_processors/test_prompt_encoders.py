"""Stable Diffusion / DeepFloyd IF processors on tiny encoders loaded from a folder, the embedding
cache, the encoding subprocess and missing-model errors."""

import json
import logging
import os
import time

import pytest
import torch

import threestudio
from threestudio.models.prompt_processors import base
from threestudio.models.prompt_processors.stable_diffusion_prompt_processor import (
    StableDiffusionPromptProcessor,
)
from threestudio.utils.errors import MissingModelError, UserError
from threestudio.utils.hub import load_pretrained, missing_model_message


def make(name, folder, **cfg):
    cls = threestudio.find(name)
    return cls(
        {"prompt": "a red cube", "pretrained_model_name_or_path": folder, "spawn": False, **cfg}
    )


def cams(batch=3):
    ele = torch.tensor([0.0, 10.0, 70.0])[:batch]
    azi = torch.tensor([0.0, 180.0, 90.0])[:batch]
    return ele, azi, torch.full_like(ele, 2.0)


def reference_clip(folder, texts):
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    model = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    ids = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model(ids.input_ids).last_hidden_state


def test_stable_diffusion_processor_from_folder(tiny_sd_folder, cache_dir):
    proc = make("stable-diffusion-prompt-processor", tiny_sd_folder, negative_prompt="ugly")
    emb = proc().get_text_embeddings(*cams())
    assert emb.shape == (6, 77, 32)
    ref = reference_clip(
        tiny_sd_folder, ["a red cube, front view", "a red cube, back view", "ugly"]
    )
    torch.testing.assert_close(emb[0], ref[0])
    torch.testing.assert_close(emb[1], ref[1])
    torch.testing.assert_close(emb[3], ref[2])
    assert not torch.allclose(emb[0], emb[1])  # views differ
    # cached under the shared cache folder (a local folder's version has its own subfolder),
    # one file per distinct prompt
    files = sorted(p.name for p in __import__("pathlib").Path(cache_dir).glob("local-*/*.pt"))
    assert len(files) == 1 + 1 + 4  # prompt, negative (shared by the views), 4 view prompts


def test_a_model_rebuilt_in_place_does_not_read_its_old_embeddings(
    tiny_sd_folder, cache_dir, tmp_path
):
    import shutil

    from transformers import CLIPTextModel

    folder = str(tmp_path / "model")  # a copy: the session's folder is shared
    shutil.copytree(tiny_sd_folder, folder)
    first = make("stable-diffusion-prompt-processor", folder)
    # the folder's text encoder is replaced by other weights under the same path
    path = os.path.join(folder, "text_encoder")
    encoder = CLIPTextModel.from_pretrained(path)
    torch.manual_seed(7)
    for param in encoder.parameters():
        param.data.normal_(0.0, 0.05)
    encoder.save_pretrained(path)
    second = make("stable-diffusion-prompt-processor", folder)
    ref = reference_clip(folder, ["a red cube, front view"])
    emb = second().get_text_embeddings(*cams())
    torch.testing.assert_close(emb[0], ref[0])
    assert not torch.allclose(first().get_text_embeddings(*cams())[0], emb[0])
    assert len(list(__import__("pathlib").Path(cache_dir).glob("local-*"))) == 2


def test_cache_is_reused(tiny_sd_folder, cache_dir, monkeypatch):
    calls = []
    original = StableDiffusionPromptProcessor.encode_prompts

    def counting(model, prompts, device, **options):
        calls.append(list(prompts))
        return original(model, prompts, device, **options)

    monkeypatch.setattr(StableDiffusionPromptProcessor, "encode_prompts", staticmethod(counting))
    first = make("stable-diffusion-prompt-processor", tiny_sd_folder)
    assert len(calls) == 1 and len(calls[0]) == 6  # prompt, "", four views
    second = make("stable-diffusion-prompt-processor", tiny_sd_folder)
    assert len(calls) == 1  # nothing encoded again
    torch.testing.assert_close(second.text_embeddings_vd, first.text_embeddings_vd)
    # a new prompt encodes only what the cache lacks
    make("stable-diffusion-prompt-processor", tiny_sd_folder, prompt_back="the back of a red cube")
    assert calls[1] == ["the back of a red cube"]
    # use_cache=false re-encodes everything
    make("stable-diffusion-prompt-processor", tiny_sd_folder, use_cache=False)
    assert len(calls) == 3 and len(calls[2]) == 6


def test_other_ranks_read_what_rank_zero_wrote(tiny_sd_folder, cache_dir, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(UserError, match="rank 0 did not write it"):
        make("stable-diffusion-prompt-processor", tiny_sd_folder)
    monkeypatch.setenv("RANK", "0")
    rank0 = make("stable-diffusion-prompt-processor", tiny_sd_folder)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(
        StableDiffusionPromptProcessor, "encode_prompts", staticmethod(lambda *a, **k: 1 / 0)
    )
    rank1 = make("stable-diffusion-prompt-processor", tiny_sd_folder)
    torch.testing.assert_close(rank1.text_embeddings_vd, rank0.text_embeddings_vd)


def test_deepfloyd_processor_from_folder(tiny_if_folder, cache_dir):
    from transformers import T5EncoderModel, T5Tokenizer

    proc = make("deep-floyd-prompt-processor", tiny_if_folder)
    emb = proc().get_text_embeddings(*cams())
    assert emb.shape == (6, 77, 32)
    tok = T5Tokenizer.from_pretrained(tiny_if_folder, subfolder="tokenizer")
    model = T5EncoderModel.from_pretrained(tiny_if_folder, subfolder="text_encoder")
    ids = tok(["a red cube, front view"], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        masked = model(ids.input_ids, attention_mask=ids.attention_mask).last_hidden_state[0]
        unmasked = model(ids.input_ids).last_hidden_state[0]
    torch.testing.assert_close(emb[0], masked)
    # the attention mask matters: padding would otherwise change the real tokens' embeddings
    n = int(ids.attention_mask.sum())
    assert not torch.allclose(masked[:n], unmasked[:n], atol=1e-4)


@pytest.mark.parametrize(
    "name", ["stable-diffusion-prompt-processor", "deep-floyd-prompt-processor"]
)
def test_missing_hub_model_is_one_clear_line(name, cache_dir):
    with pytest.raises(MissingModelError) as info:
        make(name, "threestudio-tests/no-such-model")
    message = str(info.value)
    assert "\n" not in message
    assert "'threestudio-tests/no-such-model'" in message
    assert "hf download threestudio-tests/no-such-model" in message
    assert "system.prompt_processor.pretrained_model_name_or_path=" in message
    assert "system.guidance.pretrained_model_name_or_path=" in message


def test_missing_or_incomplete_folder(tmp_path, cache_dir):
    from transformers import CLIPTokenizer

    with pytest.raises(MissingModelError, match="model folder '/no/such/folder' does not exist"):
        make("stable-diffusion-prompt-processor", "/no/such/folder")
    # transformers 5 would build an empty tokenizer from an empty folder: must be an error
    with pytest.raises(MissingModelError, match="is incomplete") as info:
        load_pretrained(CLIPTokenizer, str(tmp_path), subfolder="tokenizer")
    assert "\n" not in str(info.value) and "'tokenizer'" in str(info.value)
    # the guidance loads diffusers components through the same helper
    from diffusers import DDPMScheduler

    with pytest.raises(MissingModelError, match="'scheduler' failed"):
        load_pretrained(DDPMScheduler, str(tmp_path), subfolder="scheduler")
    with pytest.raises(MissingModelError, match="hf download threestudio-tests/none"):
        load_pretrained(DDPMScheduler, "threestudio-tests/none", subfolder="scheduler")
    assert missing_model_message("a/b", key_hint="system.guidance.x").endswith(
        "pass a local copy with system.guidance.x=/path/to/folder"
    )


@pytest.mark.slow
def test_spawned_encoding_matches_in_process(tiny_sd_folder, cache_dir, tmp_path):
    start = time.perf_counter()
    spawned = make("stable-diffusion-prompt-processor", tiny_sd_folder, spawn=True, use_cache=False)
    elapsed = time.perf_counter() - start
    local = make("stable-diffusion-prompt-processor", tiny_sd_folder, use_cache=False)
    torch.testing.assert_close(spawned.text_embeddings_vd, local.text_embeddings_vd)
    torch.testing.assert_close(spawned.uncond_text_embeddings, local.uncond_text_embeddings)
    print(f"spawned encoding took {elapsed:.1f} s")


@pytest.mark.slow
def test_spawn_failures_are_clear(tiny_sd_folder, cache_dir, tmp_path):
    with pytest.raises(MissingModelError) as info:
        make("stable-diffusion-prompt-processor", "threestudio-tests/no-such-model", spawn=True)
    assert "\n" not in str(info.value) and "no-such-model" in str(info.value)
    broken = tmp_path / "broken"
    (broken / "tokenizer").mkdir(parents=True)
    (broken / "text_encoder").mkdir()
    for sub in ("tokenizer", "text_encoder"):
        for f in (__import__("pathlib").Path(tiny_sd_folder) / sub).iterdir():
            (broken / sub / f.name).write_bytes(f.read_bytes())
    # a config the model cannot be built from (32 channels over 3 heads): not a missing model
    config = json.loads((broken / "text_encoder" / "config.json").read_text())
    config["num_attention_heads"] = 3
    (broken / "text_encoder" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError) as info:
        make("stable-diffusion-prompt-processor", str(broken), spawn=True)
    message = str(info.value)
    assert "\n" not in message
    assert "separate process failed" in message and "spawn=false" in message
    assert str(broken) in message
    print(message)


def test_spawn_impossible_falls_back_with_one_warning(cache_dir, monkeypatch, caplog):
    cls = threestudio.find("dummy-prompt-processor")

    class LocalProcessor(cls):  # defined in a function: cannot be pickled into a subprocess
        pass

    monkeypatch.setattr(base, "_warned_no_spawn", False)
    cfg = {"prompt": "a cat", "hidden_size": 4, "max_length": 2, "spawn": True}
    logger = logging.getLogger("threestudio")
    monkeypatch.setattr(logger, "propagate", True)
    with caplog.at_level(logging.WARNING, logger="threestudio"):
        first = LocalProcessor(cfg)
        LocalProcessor(cfg)
    warnings = [r for r in caplog.records if "separate process" in r.getMessage()]
    assert len(warnings) == 1
    reference = cls({**cfg, "spawn": False})
    torch.testing.assert_close(first.text_embeddings_vd, reference.text_embeddings_vd)


class LegacyProcessor(base.PromptProcessor):
    """Written against the original threestudio API: ``spawn_func`` writes the cache files."""

    @staticmethod
    def spawn_func(pretrained_model_name_or_path, prompts, cache_dir):
        import os

        for prompt in prompts:
            name = base.hash_prompt(pretrained_model_name_or_path, prompt)
            torch.save(
                torch.full((3, 2), float(len(prompt))), os.path.join(cache_dir, f"{name}.pt")
            )


def test_legacy_spawn_func_subclass(cache_dir):
    proc = LegacyProcessor(
        {"prompt": "abc", "pretrained_model_name_or_path": "legacy", "spawn": False}
    )
    assert proc.text_embeddings.shape == (1, 3, 2)
    assert proc.text_embeddings[0, 0, 0].item() == 3.0
    assert proc.uncond_text_embeddings.abs().sum().item() == 0.0
    assert proc.text_embeddings_vd[1, 0, 0].item() == len("abc, front view")
    assert proc.load_from_cache("abc, back view")[0, 0].item() == len("abc, back view")
