"""eff-random-camera-datamodule: each training camera carries the rays of a random sub-lattice of
its full image, and ``spread_samples`` puts the rendered sub-lattice back into the full image;
both are checked index by index."""

import pytest
import torch

import threestudio
from threestudio.data.uncond import RandomCameraIterableDataset
from threestudio.data.uncond_eff import (
    EffRandomCameraIterableDataset,
    nearest_sample,
    spread_samples,
    stratified_indices,
)
from threestudio.systems.eff_dreamfusion import EffDreamFusion
from threestudio.utils.errors import ConfigError


def datamodule(**cfg):
    dm = threestudio.find("eff-random-camera-datamodule")(cfg)
    dm.setup("fit")
    return dm


def test_stratified_indices_draw_one_index_per_band():
    g = torch.Generator().manual_seed(0)
    rows = stratified_indices(10, 4, 500, g)  # bands [0, 2) [2, 5) [5, 7) [7, 10)
    assert rows.shape == (500, 4)
    for k, (lo, hi) in enumerate([(0, 2), (2, 5), (5, 7), (7, 10)]):
        # every index of the band is drawn, and nothing outside it
        assert sorted(set(rows[:, k].tolist())) == list(range(lo, hi))
    # as many samples as pixels: every index, in order
    assert stratified_indices(6, 6, 3, g).tolist() == [list(range(6))] * 3


def test_nearest_sample_by_hand():
    rows = torch.tensor([[0, 3]])
    # 0 -> 0, 1 -> 0, 2 -> 3 (distance 1 against 2), 3 -> 3, 4 -> 3
    assert nearest_sample(rows, 5).tolist() == [[0, 0, 1, 1, 1]]
    # a tie goes to the lower: 1 is as far from 0 as from 2
    assert nearest_sample(torch.tensor([[0, 2]]), 3).tolist() == [[0, 0, 1]]


def test_spread_samples_index_by_index():
    # a 2 x 2 render of rows (0, 3) and columns (1, 4) of a 5 x 5 image; values 1..4 per pixel
    sub = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 2, 1).requires_grad_(True)
    full = spread_samples(sub, torch.tensor([[0, 3]]), torch.tensor([[1, 4]]), 5, 5)
    assert full.shape == (1, 5, 5, 1)
    # rows 0, 1 copy sampled row 0 and rows 2, 3, 4 sampled row 3; columns 0, 1, 2 copy
    # sampled column 1 and columns 3, 4 sampled column 4
    expected = [
        [1, 1, 1, 2, 2],
        [1, 1, 1, 2, 2],
        [3, 3, 3, 4, 4],
        [3, 3, 3, 4, 4],
        [3, 3, 3, 4, 4],
    ]
    assert full[0, :, :, 0].tolist() == expected
    # each rendered pixel sits at its own place
    for i, r in enumerate((0, 3)):
        for j, c in enumerate((1, 4)):
            assert full[0, r, c, 0] == sub[0, i, j, 0]
    # and receives the gradient of every pixel that copies it
    full.sum().backward()
    assert sub.grad[0, :, :, 0].tolist() == [[6.0, 4.0], [9.0, 6.0]]


def test_training_batch_holds_the_full_cameras_rays_at_the_sampled_pixels():
    cfg = dict(height=12, width=10, sample_height=4, sample_width=5, batch_size=3)
    dm = datamodule(**cfg)
    eff = dm.train_dataset
    plain = RandomCameraIterableDataset(dm.cfg)  # the same cameras, whole images
    eff.set_step(7)
    plain.set_step(7)
    batch, full = eff.collate(None), plain.collate(None)
    assert batch["height"] == 12 and batch["width"] == 10
    assert batch["sample_height"] == 4 and batch["sample_width"] == 5
    assert batch["rays_o"].shape == batch["rays_d"].shape == (3, 4, 5, 3)
    for key in ("c2w", "mvp_mtx", "camera_positions", "light_positions", "elevation"):
        assert torch.equal(batch[key], full[key]), key
    rows, cols = batch["sample_rows"], batch["sample_cols"]
    assert rows.shape == (3, 4) and cols.shape == (3, 5)
    for b in range(3):
        assert (rows[b].diff() > 0).all() and (cols[b].diff() > 0).all()
        for i in range(4):
            assert 3 * i <= rows[b, i] < 3 * (i + 1)  # one row in each band of 3
            for j in range(5):
                assert 2 * j <= cols[b, j] < 2 * (j + 1)  # one column in each band of 2
                r, c = rows[b, i], cols[b, j]
                assert torch.equal(batch["rays_d"][b, i, j], full["rays_d"][b, r, c])
                assert torch.equal(batch["rays_o"][b, i, j], full["rays_o"][b, r, c])
        # the mask marks exactly the rendered pixels
        mask = torch.zeros(12, 10, dtype=torch.bool)
        mask[rows[b][:, None], cols[b][None, :]] = True
        assert torch.equal(batch["efficiency_mask"][b], mask)
    # cameras of one batch draw their own sub-lattices; a step's batch is reproducible
    assert not all(torch.equal(rows[0], rows[b]) for b in (1, 2))
    eff.set_step(7)
    assert torch.equal(eff.collate(None)["sample_rows"], rows)


def test_sample_sizes_follow_the_resolution_milestones():
    dm = datamodule(
        height=[8, 16],
        width=[8, 16],
        batch_size=[1, 1],
        sample_height=[4, 8],
        sample_width=[4, 8],
        resolution_milestones=[3],
    )
    ds = dm.train_dataset
    ds.set_step(2)
    assert ds.collate(None)["rays_d"].shape == (1, 4, 4, 3)
    ds.set_step(3)
    batch = ds.collate(None)
    assert batch["rays_d"].shape == (1, 8, 8, 3) and batch["height"] == 16
    # evaluation renders whole images
    dm.setup("validate")
    assert "sample_rows" not in dm.val_dataset[0]


@pytest.mark.parametrize(
    "cfg,key",
    [
        (dict(height=16, width=16, sample_height=32), "data.sample_height=32"),
        (dict(height=16, width=16, sample_height=8, sample_width=0), "data.sample_width=0"),
        (
            dict(height=[8, 16], width=[8, 16], resolution_milestones=[2], sample_height=[4, 4, 4]),
            "data.sample_height: 3 values",
        ),
    ],
)
def test_bad_sample_sizes_are_one_line_errors(cfg, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")):
        EffRandomCameraIterableDataset(threestudio.find("eff-random-camera-datamodule")(cfg).cfg)


def test_the_guidance_scores_the_spread_image():
    out = {"comp_rgb": torch.arange(4.0).view(1, 2, 2, 1)}
    batch = {"sample_rows": torch.tensor([[0, 2]]), "sample_cols": torch.tensor([[1, 3]])}
    batch.update(height=4, width=4)
    image = EffDreamFusion.guidance_input(None, out, batch)
    assert torch.equal(image, spread_samples(out["comp_rgb"], **_spread_args(batch)))
    assert image.shape == (1, 4, 4, 1)
    # without a sub-lattice (another datamodule) the render itself
    assert EffDreamFusion.guidance_input(None, out, {"height": 2, "width": 2}) is out["comp_rgb"]


def _spread_args(batch):
    return dict(
        sample_rows=batch["sample_rows"],
        sample_cols=batch["sample_cols"],
        height=batch["height"],
        width=batch["width"],
    )
