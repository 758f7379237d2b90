"""Shared test set-up: no network, a private cache, small thread counts."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "threestudio_cache"
    monkeypatch.setenv("THREESTUDIO_CACHE_DIR", str(cache))
    yield
