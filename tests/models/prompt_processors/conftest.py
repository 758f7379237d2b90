"""Fixtures for the prompt processor tests: tiny text encoders saved in the diffusers layout and a
private embedding cache per test."""

import os
import sys
from pathlib import Path

import pytest

# never reach for the network; set before transformers/huggingface_hub read it
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_TESTS_ROOT = str(Path(__file__).resolve().parents[2])
if _TESTS_ROOT not in sys.path:
    sys.path.insert(0, _TESTS_ROOT)


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory):
    from tiny_text import make_tiny_clip_text

    return str(make_tiny_clip_text(tmp_path_factory.mktemp("tiny-sd")))


@pytest.fixture(scope="session")
def tiny_if_folder(tmp_path_factory):
    from tiny_text import make_tiny_t5_text

    return str(make_tiny_t5_text(tmp_path_factory.mktemp("tiny-if")))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh embedding cache, also used as the default through THREESTUDIO_CACHE_DIR."""
    monkeypatch.setenv("THREESTUDIO_CACHE_DIR", str(tmp_path / "threestudio-cache"))
    return str(tmp_path / "threestudio-cache" / "text_embeddings")
