"""Shared test set-up: no network, a private cache, small thread counts."""

import logging
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# under pytest-xdist (-n N) the workers share the cores: each worker, and every process it
# starts, gets its share of threads instead of all of them (set before anything imports torch)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    os.environ.setdefault("OMP_NUM_THREADS", _THREADS)
    os.environ.setdefault("MKL_NUM_THREADS", _THREADS)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "threestudio_cache"
    monkeypatch.setenv("THREESTUDIO_CACHE_DIR", str(cache))
    yield


@pytest.fixture(autouse=True)
def _restore_threestudio_logger():
    """launch.main sets the threestudio logger up for a console (its own handler, no
    propagation, which hides records from caplog): every test gets the logger back as it was,
    so no test depends on which tests ran before it in the same process."""
    logger = logging.getLogger("threestudio")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:] = saved[0]
    logger.propagate, logger.level = saved[1], saved[2]
