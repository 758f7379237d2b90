"""The SDI system's own term: the naive convexity prior on the rendered normals."""

import math

import torch

from threestudio.systems.sdi import convexity_loss


def rotating_normals(delta: float, axis: str, size: int = 8) -> torch.Tensor:
    """Normals (cos theta, sin theta, 0) whose angle grows by ``delta`` per pixel along the
    image's columns (``axis="x"``) or rows (``axis="y"``)."""
    steps = torch.arange(size, dtype=torch.float32) * delta
    theta = (
        steps.view(1, size).expand(size, size)
        if axis == "x"
        else steps.view(size, 1).expand(size, size)
    )
    normals = torch.stack([theta.cos(), theta.sin(), torch.zeros_like(theta)], dim=-1)
    return normals[None]


def test_convexity_is_minus_the_sine_between_neighbours():
    """Left x right has z = sin(delta) for normals turning by delta per column, rows agree
    (their cross products vanish): the loss is -sin(delta). Down x up is the vertical term."""
    delta = 0.2
    torch.testing.assert_close(
        convexity_loss(rotating_normals(delta, "x"), 8), torch.tensor(-math.sin(delta))
    )
    # turning the other way is concave: the loss changes sign
    torch.testing.assert_close(
        convexity_loss(rotating_normals(-delta, "x"), 8), torch.tensor(math.sin(delta))
    )
    # along the rows, down x up = n_(i+1) x n_i has z = -sin(delta)
    torch.testing.assert_close(
        convexity_loss(rotating_normals(delta, "y"), 8), torch.tensor(math.sin(delta))
    )


def test_convexity_looks_at_a_downscaled_normal_image():
    """A 16x16 image of per-pixel turns delta read at 8x8 (bilinear, no corner alignment)
    turns by about 2 delta per pixel."""
    delta = 0.05
    loss = convexity_loss(rotating_normals(delta, "x", size=16), 8)
    assert abs(float(loss) + math.sin(2 * delta)) < 2e-3
