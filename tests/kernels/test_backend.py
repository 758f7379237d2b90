"""The kernels' backend choice: one log line per kernel when an accelerated backend is asked for
and the pure-PyTorch one runs instead, and the package's place in the layers."""

import ast
import logging
import pathlib

import pytest
import torch

from tests.tiny_hash_grid import hash_config
from threestudio.kernels import backend, hash_grid, rasterizer, ray_marching
from threestudio.models import networks

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "threestudio"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines(monkeypatch):
    """Lines logged by threestudio during the test, with no kernel having reported yet."""
    monkeypatch.setattr(backend, "_REPORTED", set())
    logger = logging.getLogger("threestudio")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_hash_grid_without_tinycudann_says_so_once(monkeypatch, log_lines):
    monkeypatch.setattr(hash_grid, "tinycudann", lambda: None)
    networks.get_encoding(3, hash_config())
    networks.get_encoding(3, hash_config())
    assert len(log_lines) == 1
    assert "HashGrid" in log_lines[0] and "tinycudann" in log_lines[0]


@pytest.mark.parametrize("otype", ["FullyFusedMLP", "CutlassMLP"])
def test_fused_mlp_without_tinycudann_says_so_once(otype, monkeypatch, log_lines):
    monkeypatch.setattr(networks, "tinycudann", lambda: None)
    config = {"otype": otype, "n_neurons": 16, "n_hidden_layers": 1}
    networks.get_mlp(3, 1, config)
    networks.get_mlp(3, 1, config)
    networks.get_mlp(3, 1, {**config, "otype": "VanillaMLP"})  # asks for no accelerated backend
    assert len(log_lines) == 1
    assert otype in log_lines[0] and "tinycudann" in log_lines[0]


def test_rasterizer_without_nvdiffrast_says_so_once(monkeypatch, log_lines):
    monkeypatch.setattr(rasterizer, "_nvdiffrast_available", lambda: False)
    first = rasterizer.NVDiffRasterizerContext("cuda", "cpu")
    second = rasterizer.NVDiffRasterizerContext("gl", "cpu")
    assert first.backend == second.backend == "torch"
    assert len(log_lines) == 1
    assert "nvdiffrast" in log_lines[0] and "not installed" in log_lines[0]


class _CudaLike:
    """Stands in for a CUDA tensor where there is no GPU: all use_nerfacc_kernels reads."""

    is_cuda = True


def test_ray_marching_without_nerfacc_kernels_says_so_once(monkeypatch, log_lines):
    monkeypatch.setattr(ray_marching, "_nerfacc_cuda_loads", lambda: False)
    assert not ray_marching.use_nerfacc_kernels(torch.zeros(1))  # CPU: nothing was asked
    assert log_lines == []
    assert not ray_marching.use_nerfacc_kernels(_CudaLike())
    assert not ray_marching.use_nerfacc_kernels(_CudaLike())
    assert len(log_lines) == 1
    assert "nerfacc" in log_lines[0]


def test_each_kernel_reports_on_its_own(log_lines):
    backend.report_fallback("a", "fast a", "missing")
    backend.report_fallback("b", "fast b", "missing")
    backend.report_fallback("a", "fast a", "missing")
    assert len(log_lines) == 2


def _imported_modules(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_kernels_import_nothing_above_utils():
    # utils.rasterize re-exports the rasterizer kernel, so kernels must not reach back up
    higher = ("threestudio.models", "threestudio.data", "threestudio.systems")
    for path in sorted((PACKAGE / "kernels").glob("*.py")):
        for module in _imported_modules(path):
            assert not module.startswith(higher), f"{path.name} imports {module}"
