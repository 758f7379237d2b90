"""Packages published extensions import at top level are installed and work."""

import os

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_opencv_resize_and_colour_conversion():
    import cv2

    image = np.array([[0, 10], [20, 30]], dtype=np.uint8)
    up = cv2.resize(image, (4, 4), interpolation=cv2.INTER_NEAREST)
    expected = np.array(
        [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [20, 20, 30, 30]], dtype=np.uint8
    )
    assert np.array_equal(up, expected)
    rgb = np.zeros((1, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 0, 255)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert bgr[0, 0].tolist() == [0, 0, 255] and bgr[0, 1].tolist() == [255, 0, 0]


def test_einops_rearrange_and_repeat():
    from einops import rearrange, repeat

    x = torch.arange(24).reshape(2, 3, 4)
    assert torch.equal(rearrange(x, "b h w -> b w h"), x.transpose(1, 2))
    assert torch.equal(rearrange(x, "b h w -> (b h) w"), x.reshape(6, 4))
    assert torch.equal(
        repeat(torch.tensor([1, 2]), "n -> n k", k=3), torch.tensor([[1] * 3, [2] * 3])
    )


def test_requirements_list_them():
    names = [
        line.split("==")[0].split(">=")[0].strip()
        for line in open(os.path.join(REPO, "requirements.txt"))
        if line.strip() and not line.startswith("#")
    ]
    assert "einops" in names and "opencv-python-headless" in names
    assert "opencv-python" not in names  # both install cv2
