"""Shared fixtures for the guidance tests: tiny pipelines on disk and fixed prompt embeddings."""

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
_TESTS = Path(__file__).resolve().parents[2]
for path in (str(_TESTS), str(_TESTS.parent)):
    if path not in sys.path:
        sys.path.insert(0, path)

from tiny_pipelines import (  # noqa: E402
    CROSS_ATTENTION_DIM,
    build_tiny_controlnet,
    build_tiny_if,
    build_tiny_ip2p,
    build_tiny_sd,
    build_tiny_zero123,
)


@dataclass
class FixedPromptUtils:
    """Stands in for a prompt processor's output: fixed random embeddings, [cond; uncond]."""

    cond: torch.Tensor  # [N, Nf]
    uncond: torch.Tensor  # [N, Nf]
    negs: Optional[torch.Tensor] = None  # [2, N, Nf] for Perp-Neg
    neg_weights: Optional[torch.Tensor] = None  # [2]
    use_perp_neg: bool = False

    def get_text_embeddings(
        self, elevation, azimuth, camera_distances, view_dependent_prompting=True
    ):
        batch_size = elevation.shape[0]
        return torch.cat(
            [self.cond.expand(batch_size, -1, -1), self.uncond.expand(batch_size, -1, -1)]
        )

    def get_text_embeddings_perp_neg(
        self, elevation, azimuth, camera_distances, view_dependent_prompting=True
    ):
        batch_size = elevation.shape[0]
        # order: cond (B), uncond (B), then per sample its two negatives
        negs = self.negs[None].expand(batch_size, -1, -1, -1).reshape(-1, *self.negs.shape[1:])
        embeddings = torch.cat(
            [self.get_text_embeddings(elevation, azimuth, camera_distances), negs]
        )
        return embeddings, self.neg_weights[None].expand(batch_size, -1)


def make_prompt_utils(seed: int = 0, n_tokens: int = 7, dim: int = CROSS_ATTENTION_DIM):
    gen = torch.Generator().manual_seed(seed)
    return FixedPromptUtils(
        cond=torch.randn(n_tokens, dim, generator=gen),
        uncond=torch.randn(n_tokens, dim, generator=gen),
        negs=torch.randn(2, n_tokens, dim, generator=gen),
        neg_weights=torch.tensor([-0.5, -1.5]),
    )


@pytest.fixture
def prompt_utils():
    return make_prompt_utils()


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_if_path(tmp_path_factory):
    return build_tiny_if(tmp_path_factory.mktemp("tiny_if"))


@pytest.fixture(scope="session")
def tiny_zero123_path(tmp_path_factory):
    return build_tiny_zero123(tmp_path_factory.mktemp("tiny_zero123"))


@pytest.fixture(scope="session")
def tiny_ip2p_path(tmp_path_factory):
    return build_tiny_ip2p(tmp_path_factory.mktemp("tiny_ip2p"))


@pytest.fixture(scope="session")
def tiny_controlnet_path(tmp_path_factory):
    return build_tiny_controlnet(tmp_path_factory.mktemp("tiny_controlnet"))
