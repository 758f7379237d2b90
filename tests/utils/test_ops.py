import numpy as np
import pytest
import torch

from threestudio.utils.ops import as_resolution, as_size


def test_as_size_reads_ints_out_of_collated_batches():
    assert as_size(32) == 32 and isinstance(as_size(32), int)
    # a default collate: one tensor element per item (one item, or several that agree)
    for value in (torch.tensor([32]), torch.tensor(32), torch.tensor([32, 32, 32]), [32]):
        size = as_size(value)
        assert size == 32 and isinstance(size, int)
    assert as_size(np.int64(8)) == 8 and isinstance(as_size(np.array([8])), int)
    assert as_resolution(torch.tensor([16]), 24) == (16, 24)
    with pytest.raises(ValueError, match="height must be one value"):
        as_resolution(torch.tensor([16, 32]), 24)
