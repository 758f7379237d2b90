"""BaseSystem with batches from image datamodules: collated height/width become ints."""

import torch

from threestudio.systems.base import BaseSystem


def test_collated_height_and_width_become_ints():
    system = BaseSystem({})
    batch = {"height": torch.tensor([32]), "width": torch.tensor([24]), "index": torch.tensor([0])}
    system.on_test_batch_start(batch, 0)  # in place, before the step sees the batch
    out = batch
    assert out["height"] == 32 and isinstance(out["height"], int)
    assert out["width"] == 24 and isinstance(out["width"], int)
    assert torch.is_tensor(out["index"])
