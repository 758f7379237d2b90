"""Packed volume-rendering helpers and estimators against dense references and nerfacc's CPU
paths (the parts of nerfacc 0.5.3 that run without CUDA)."""

import nerfacc
import pytest
import torch
import torch.nn.functional as F

from threestudio.kernels.ray_marching import (
    ImportanceEstimator,
    OccGridEstimator,
    accumulate_along_rays,
    packed_exclusive_sum,
    ray_aabb_intersect,
    render_weight_from_alpha,
    render_weight_from_density,
)


def ragged_samples(seed=0, n_rays=7):
    """Rays with 0..12 samples each, packed by ray, and the same samples padded densely."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 13, (n_rays,), generator=g)
    counts[2] = 0  # a ray without samples
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    n = int(counts.sum())
    dt = torch.rand(n, generator=g) * 0.2 + 0.01
    sigmas = torch.rand(n, generator=g) * 5
    return counts, ray_indices, dt, sigmas


def test_packed_weights_match_dense_nerfacc_per_ray():
    counts, ray_indices, dt, sigmas = ragged_samples()
    t_starts = packed_exclusive_sum(dt, ray_indices, len(counts))
    t_ends = t_starts + dt
    weights, trans, alphas = render_weight_from_density(
        t_starts, t_ends, sigmas, ray_indices, len(counts)
    )
    start = 0
    for c in counts.tolist():
        if c == 0:
            continue
        sl = slice(start, start + c)
        # nerfacc's dense path runs on CPU: one ray as a [1, c] batch
        w_ref, t_ref, _ = nerfacc.render_weight_from_density(
            t_starts[sl][None], t_ends[sl][None], sigmas[sl][None]
        )
        assert torch.allclose(weights[sl], w_ref[0], atol=1e-6)
        assert torch.allclose(trans[sl], t_ref[0], atol=1e-6)
        start += c
    # alpha form agrees with the density form
    w_alpha, _ = render_weight_from_alpha(alphas, ray_indices, len(counts))
    assert torch.allclose(w_alpha, weights, atol=1e-6)


def test_accumulate_matches_nerfacc_and_gradients_flow():
    counts, ray_indices, dt, sigmas = ragged_samples(seed=1)
    values = torch.rand(len(ray_indices), 3)
    weights = torch.rand(len(ray_indices), requires_grad=True)
    ours = accumulate_along_rays(weights, values, ray_indices, len(counts))
    ref = nerfacc.accumulate_along_rays(
        weights, values, ray_indices=ray_indices, n_rays=len(counts)
    )
    assert torch.allclose(ours, ref, atol=1e-6)
    assert ours[2].abs().max() == 0  # the ray without samples
    ours.sum().backward()
    assert torch.allclose(weights.grad, values.sum(-1))


def test_ray_aabb_intersection():
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    rays_o = torch.tensor([[-3.0, 0, 0], [-3.0, 2, 0], [0.0, 0, 0], [2.0, 0.5, 0]])
    rays_d = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0.0, 0, 1], [1.0, 0, 0]])
    t0, t1, hit = ray_aabb_intersect(rays_o, rays_d, aabb)
    assert hit.tolist() == [True, False, True, False]  # miss; box behind the origin
    assert torch.allclose(t0[0], torch.tensor(2.0)) and torch.allclose(t1[0], torch.tensor(4.0))
    assert torch.allclose(t1[2], torch.tensor(1.0))


def test_grid_update_equals_nerfacc_estimator():
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])

    def occ_eval_fn(x):  # a ball of density 10 times a step of 0.01
        return (x.norm(dim=-1, keepdim=True) < 0.4).float() * 0.1

    ours = OccGridEstimator(aabb, 16)
    ref = nerfacc.OccGridEstimator(roi_aabb=aabb, resolution=16, levels=1)
    for step in range(0, 64, 16):  # warm-up: every cell, one random point each
        torch.manual_seed(step)
        ours.update_every_n_steps(step, occ_eval_fn)
        torch.manual_seed(step)
        ref.update_every_n_steps(step, occ_eval_fn)
    assert torch.equal(ours.occs, ref.occs)
    assert torch.equal(ours.binaries, ref.binaries)
    assert 0 < ours.binaries.float().mean() < 0.1


def test_grid_update_after_warmup_equals_nerfacc_estimator():
    # after warm-up nerfacc re-evaluates a quarter of the cells drawn uniformly plus a quarter
    # drawn from the occupied ones (binaries); under a softplus density every cell has occs > 0
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])

    def occ_eval_fn(x):
        return F.softplus(20 * (0.4 - x.norm(dim=-1, keepdim=True))) * 0.01

    ours = OccGridEstimator(aabb, 16)
    ref = nerfacc.OccGridEstimator(roi_aabb=aabb, resolution=16, levels=1)
    for step in range(0, 160, 16):  # warm-up until step 32
        torch.manual_seed(step)
        ours.update_every_n_steps(step, occ_eval_fn, warmup_steps=32)
        torch.manual_seed(step)
        ref.update_every_n_steps(step, occ_eval_fn, warmup_steps=32)
        assert torch.equal(ours.occs, ref.occs), step
        assert torch.equal(ours.binaries, ref.binaries), step
    assert (ours.occs > 0).all()
    assert 0 < ours.binaries.float().mean() < 0.1


def test_grid_update_skips_cells_marked_invisible_like_nerfacc():
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])

    def occ_eval_fn(x):
        return (x.norm(dim=-1, keepdim=True) < 0.5).float() * 0.1

    ours = OccGridEstimator(aabb, 8)
    ref = nerfacc.OccGridEstimator(roi_aabb=aabb, resolution=8, levels=1)
    for grid in (ours, ref):
        grid.occs[::3] = -1.0  # what nerfacc's mark_invisible_cells writes
    for step in (0, 16, 32, 48):
        torch.manual_seed(step)
        ours.update_every_n_steps(step, occ_eval_fn, warmup_steps=16)
        torch.manual_seed(step)
        ref.update_every_n_steps(step, occ_eval_fn, warmup_steps=16)
    assert torch.equal(ours.occs, ref.occs) and torch.equal(ours.binaries, ref.binaries)
    assert (ours.occs[::3] == -1).all()


def test_occgrid_samples_on_nerfaccs_lattice_from_the_near_plane():
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    grid = OccGridEstimator(aabb, 8)
    grid.fill(True)
    rays_o = torch.tensor([[-2.0037, 0.1, 0.1]])  # enters the box at t = 1.0037
    rays_d = torch.tensor([[1.0, 0, 0]])
    step, near = 0.01, 0.5
    _, t0, t1 = grid.sampling(rays_o, rays_d, near_plane=near, render_step_size=step)
    k = (t0 - near) / step
    assert torch.allclose(k, k.round(), atol=1e-3)
    # every interval whose midpoint lies in the box: k = 50 (t = 1.0, midpoint 1.005) to 249
    assert k.round().long().tolist() == list(range(50, 250))
    assert torch.allclose(t1 - t0, torch.full_like(t0, step))
    # stratified: nerfacc moves each ray's near plane by rand * step, drawn first
    torch.manual_seed(3)
    jitter = torch.rand(1).item() * step
    torch.manual_seed(3)
    _, t0, _ = grid.sampling(
        rays_o, rays_d, near_plane=near, render_step_size=step, stratified=True
    )
    k = (t0 - near - jitter) / step
    assert torch.allclose(k, k.round(), atol=1e-3)
    assert t0[0] + 0.5 * step >= 1.0037 > t0[0] - 0.5 * step  # the first midpoint in the box


@pytest.mark.parametrize("mean_occ,kept", [(0.001, True), (0.5, False)])
def test_occgrid_alpha_threshold_is_capped_by_the_mean_occupancy(mean_occ, kept):
    # nerfacc's sampling uses min(alpha_thre, occs.mean()): a faint scene keeps its samples
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    grid = OccGridEstimator(aabb, 8)
    grid.binaries.fill_(True)
    grid.occs.fill_(mean_occ)
    rays_o = torch.tensor([[-2.0, 0.1, 0.1]])
    rays_d = torch.tensor([[1.0, 0, 0]])
    step = 0.01

    def sigma_fn(t_starts, t_ends, ray_indices):  # alpha = 1 - exp(-0.5) ~ 0.005 per sample
        return torch.full_like(t_starts, 0.5)

    _, t0, _ = grid.sampling(rays_o, rays_d, render_step_size=step)
    _, t0_pruned, _ = grid.sampling(
        rays_o, rays_d, sigma_fn=sigma_fn, render_step_size=step, alpha_thre=0.01
    )
    assert len(t0) == 200
    assert len(t0_pruned) == (len(t0) if kept else 0)


def test_occgrid_sampling_covers_only_occupied_cells_on_lattice():
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    grid = OccGridEstimator(aabb, 8)
    grid.binaries[0, 2:6, 2:6, 2:6] = True  # the cube [-0.5, 0.5]^3
    rays_o = torch.tensor([[-2.0, 0.1, 0.1], [-2.0, 0.9, 0.9]])
    rays_d = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]])
    step = 0.01
    ray_indices, t0, t1 = grid.sampling(rays_o, rays_d, render_step_size=step)
    assert (ray_indices == 0).all()  # the second ray only crosses empty cells
    mid = (t0 + t1) / 2 - 2.0  # x coordinate of each sample
    assert mid.min() > -0.5 and mid.max() < 0.5
    assert abs(len(t0) - 1.0 / step) <= 1
    # samples lie on nerfacc's lattice near_plane + k * step (near 0: also on t = 1, where the
    # ray enters the scene box)
    k = (t0 - 1.0) / step
    assert torch.allclose(k, k.round(), atol=1e-3)


def test_importance_sampling_concentrates_on_density():
    n_rays = 5

    def sigma_fn(t_starts, t_ends):  # a thin layer at t in [1.0, 1.1]
        t = (t_starts + t_ends) / 2
        return ((t > 1.0) & (t < 1.1)).float() * 50.0

    est = ImportanceEstimator()
    t_starts, t_ends = est.sampling([sigma_fn], [32], 64, n_rays, 0.0, 2.0, stratified=True)
    assert t_starts.shape == (n_rays, 32 + 64)
    assert (t_ends >= t_starts).all() and (t_starts[:, 1:] >= t_starts[:, :-1]).all()
    mid = (t_starts + t_ends) / 2
    in_layer = ((mid > 0.97) & (mid < 1.13)).float().sum(-1)
    # the layer is 5 % of the range; most of the 64 fine samples land in or next to it
    assert (in_layer > 40).all()
