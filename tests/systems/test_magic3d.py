"""Magic3D: the refine stage starts from the coarse stage's surface, and its mesh regularisers
have the hand-computed values.

The coarse geometry is an implicit-volume whose field is set by hand to a known anisotropic
shape: a one-frequency encoding gives sin(pi u_i) = cos(pi x_i / 2R) per axis (u = the point in
the [0, 1]^3 box), and the networks are set to raw density
S (1 - sum_i a_i (1 - cos(pi x_i / 2R))), zero (softplus density ln 2) on a convex surface with
semi-axes SEMI_AXES. The hand-over is the one users run: a trial folder with the coarse stage's
parsed.yaml and checkpoint, handed to the published refine config as
system.geometry_convert_from."""

import math

import pytest
import torch

from threestudio.data.uncond import make_camera_batch
from threestudio.models.mesh import Mesh
from threestudio.systems.magic3d import Magic3D
from threestudio.utils.config import dump_config, load_config
from threestudio.utils.errors import ConfigError
from threestudio.utils.paths import REPO_ROOT as REPO

SEMI_AXES = (0.7, 0.45, 0.3)  # x (back), y (right), z (up)
SHARPNESS = 100.0  # S: how fast the raw density grows inside (a crisp volume silhouette)
RADIUS = 2.0  # the published configs' scene box
PROMPT = "system.prompt_processor.prompt=a hamburger"


def coarse_config():
    cfg = load_config(
        f"{REPO}/configs/magic3d-coarse-sd.yaml",
        cli_args=[
            PROMPT,
            "system.geometry.density_bias=0.0",  # set below, as the field's constant term
            "system.geometry.isosurface_threshold=0.6931471805599453",  # softplus(0): the surface
            "system.renderer.num_samples_per_ray=256",
            # march every cell: the occupancy grid of a field set by hand was never updated
            "system.renderer.grid_prune=false",
        ],
    )
    # an encoding with no parameters (sin/cos(pi u) per axis) and a two-neuron density network
    cfg.system.geometry.pos_encoding_config = {"otype": "Frequency", "n_frequencies": 1}
    cfg.system.geometry.mlp_network_config = {
        "otype": "VanillaMLP",
        "activation": "ReLU",
        "output_activation": "none",
        "n_neurons": 2,
        "n_hidden_layers": 1,
    }
    return cfg


def set_known_shape(geometry) -> None:
    """raw density = b + sum_i w_i sin(pi u_i), passed through the ReLU layer as
    relu(L) - relu(-L) (the MLP has no biases)."""
    a = [1.0 / (1.0 - math.cos(math.pi * s / (2 * RADIUS))) for s in SEMI_AXES]
    geometry.cfg.density_bias = SHARPNESS * (1.0 - sum(a))
    first, last = geometry.density_network.layers[0], geometry.density_network.layers[-1]
    with torch.no_grad():
        w = torch.zeros(first.weight.shape[1])
        w[[0, 2, 4]] = torch.tensor([SHARPNESS * ai for ai in a])  # the sin features
        first.weight.copy_(torch.stack([w, -w]))
        last.weight.copy_(torch.tensor([[1.0, -1.0]]))


def shape_level(x: torch.Tensor) -> torch.Tensor:
    """sum_i a_i (1 - cos(pi x_i / 2R)) - 1: negative inside the known shape."""
    a = torch.tensor([1.0 / (1.0 - math.cos(math.pi * s / (2 * RADIUS))) for s in SEMI_AXES])
    return (a * (1 - torch.cos(math.pi * x / (2 * RADIUS)))).sum(-1) - 1


def cameras(size=48):
    elevation = torch.tensor([0.0, 0.0, 60.0, 20.0])
    azimuth = torch.tensor([0.0, 90.0, 30.0, -135.0])
    distance = torch.full_like(elevation, 2.5)
    fovy = torch.full_like(elevation, 40.0)
    positions = torch.stack(
        [
            distance * torch.cos(torch.deg2rad(elevation)) * torch.cos(torch.deg2rad(azimuth)),
            distance * torch.cos(torch.deg2rad(elevation)) * torch.sin(torch.deg2rad(azimuth)),
            distance * torch.sin(torch.deg2rad(elevation)),
        ],
        -1,
    )
    return make_camera_batch(elevation, azimuth, distance, fovy, size, size, positions)


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    torch.manual_seed(0)
    trial = tmp_path_factory.mktemp("coarse_trial")
    cfg = coarse_config()
    coarse = Magic3D(cfg.system)
    set_known_shape(coarse.geometry)
    cfg.system.geometry.density_bias = coarse.geometry.cfg.density_bias
    # the trial as launch.py leaves it: configs/parsed.yaml beside ckpts/last.ckpt
    (trial / "configs").mkdir()
    (trial / "ckpts").mkdir()
    dump_config(str(trial / "configs" / "parsed.yaml"), cfg)
    ckpt = trial / "ckpts" / "last.ckpt"
    torch.save({"state_dict": coarse.state_dict(), "epoch": 0, "global_step": 0}, ckpt)

    refine_cfg = load_config(
        f"{REPO}/configs/magic3d-refine-sd.yaml",
        cli_args=[
            PROMPT,
            f"system.geometry_convert_from={ckpt}",
            "system.geometry.isosurface_resolution=64",
        ],
    )
    refine = Magic3D(refine_cfg.system)
    coarse.eval()
    refine.eval()
    return coarse, refine


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def test_refine_stage_starts_from_the_coarse_surface(stages):
    coarse, refine = stages
    assert refine.cfg.refinement and type(refine.geometry).__name__ == "TetrahedraSDFGrid"
    batch = cameras()
    with torch.no_grad():
        volume = coarse(batch)["opacity"][..., 0] > 0.5
        out = refine(batch)
    mesh_mask = out["opacity"][..., 0] > 0.5
    for view in range(volume.shape[0]):
        assert volume[view].sum() > 100  # the shape covers a good part of each view
        assert iou(volume[view], mesh_mask[view]) >= 0.9, view
    # the mesh is the known surface: its extent along each axis is the semi-axis, and its
    # vertices lie on the level set (to within a fraction of a tet cell)
    v = out["mesh"].v_pos.detach()
    for axis, semi in enumerate(SEMI_AXES):
        assert v[:, axis].max().item() == pytest.approx(semi, abs=0.03)
        assert v[:, axis].min().item() == pytest.approx(-semi, abs=0.03)
    assert shape_level(v).abs().max().item() < 0.1


def test_refine_regularisers_are_the_meshes_with_hand_computed_values(stages):
    _, refine = stages
    # two triangles folded along their shared edge 0-2 (as in tests/models/test_mesh.py)
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 1]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    refine.cfg.loss.lambda_laplacian_smoothness = 1.0
    try:
        terms = refine.regularizers({"mesh": Mesh(v, f)})
    finally:
        del refine.cfg.loss["lambda_laplacian_smoothness"]
    expected_nc = (2 * (1 - 2 / 6**0.5) + 2 * (1 - 4 / 18**0.5)) / 5
    assert terms["loss_normal_consistency"].item() == pytest.approx(expected_nc, rel=1e-5)
    # uniform Laplacian: vertices 0 and 2 have 3 neighbours, 1 and 3 have 2;
    # (L v)_0 = 3 v0 - v1 - v2 - v3 = (-2, -2, -1), (L v)_1 = 2 v1 - v0 - v2 = (1, -1, 0),
    # (L v)_2 = 3 v2 - v0 - v1 - v3 = (2, 2, -1), (L v)_3 = 2 v3 - v0 - v2 = (-1, 1, 2)
    expected_lap = (3 + 2**0.5 + 3 + 6**0.5) / 4
    assert terms["loss_laplacian_smoothness"].item() == pytest.approx(expected_lap, rel=1e-6)
    # without lambda_laplacian_smoothness the term is off; the volume terms never appear
    terms = refine.regularizers({"mesh": Mesh(v, f)})
    assert set(terms) == {"loss_normal_consistency"}


def test_refinement_needs_a_mesh_renderer(stages):
    coarse, refine = stages
    with pytest.raises(ConfigError, match="renders no mesh"):
        refine.regularizers({"opacity": torch.zeros(1, 2, 2, 1)})


def test_coarse_stage_uses_dreamfusions_regularisers(stages):
    coarse, _ = stages
    opacity = torch.tensor([0.0, 0.3, 0.6, 1.0]).view(1, 2, 2, 1)
    # three samples: facing the camera, facing away (cos 0.6), facing away (cos 1)
    normal = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.8, 0.6], [0.0, 0.0, 1.0]])
    t_dirs = torch.tensor([[0.0, 0.0, 1.0]]).expand(3, 3)
    weights = torch.tensor([[0.5], [0.25], [0.1]])
    terms = coarse.regularizers(
        {"opacity": opacity, "normal": normal, "t_dirs": t_dirs, "weights": weights}
    )
    # the published coarse weights at step 0: orient 10 (its ramp's start), sparsity 1, opaque 0
    assert set(terms) == {"loss_orient", "loss_sparsity"}
    sparsity = sum((o**2 + 0.01) ** 0.5 for o in (0.0, 0.3, 0.6, 1.0)) / 4
    assert terms["loss_sparsity"].item() == pytest.approx(sparsity, rel=1e-6)
    # sum of weight * max(0, n . d)^2 over the samples, per ray with some opacity (3 of 4)
    orient = (0.25 * 0.6**2 + 0.1 * 1.0) / 3
    assert terms["loss_orient"].item() == pytest.approx(orient, rel=1e-6)


def test_laplacian_of_a_flat_grid_and_of_a_raised_vertex():
    # a 5 x 5 vertex grid in the plane z = 0, each square split along the same diagonal
    n = 5
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    v = torch.stack([ii.reshape(-1), jj.reshape(-1), torch.zeros(n * n, dtype=torch.long)], -1)
    v = v.float()
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, (i + 1) * n + j, (i + 1) * n + j + 1, i * n + j + 1
            faces += [[a, b, c], [a, c, d]]
    f = torch.tensor(faces)
    flat = Mesh(v, f)
    lap = torch.sparse.mm(flat._laplacian_uniform(), v)
    interior = ((ii > 0) & (ii < n - 1) & (jj > 0) & (jj < n - 1)).reshape(-1)
    assert lap[interior].abs().max().item() == 0.0  # each interior vertex: its neighbours' mean
    # raising the centre vertex by h: (L v) gains 6 h at it (6 neighbours) and -h at each of its
    # 6 neighbours, all interior, whose (L v) was 0: the mean norm grows by (6 h + 6 h) / 25
    h = 0.3
    raised = v.clone()
    raised[2 * n + 2, 2] = h
    delta = Mesh(raised, f).laplacian().item() - flat.laplacian().item()
    assert delta == pytest.approx(12 * h / 25, rel=1e-5)
    assert Mesh(v, f).normal_consistency().item() == pytest.approx(0.0, abs=1e-7)
