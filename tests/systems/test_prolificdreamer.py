"""prolificdreamer-system from the shipped configs with tiny models: the coarse stage's step
trains the LoRA branch and not the pretrained UNet; the three stages chain as users run them
(trial folders with parsed.yaml + ckpts/last.ckpt handed over by system.geometry_convert_from):
the geometry stage's DMTet surface is the coarse field's level set and learns from the normal
map, the texture stage keeps that surface fixed and optimises only its texture field.

The VSD gradient against the hand-computed w(t) (eps_pretrain - eps_lora), the camera's effect
on the LoRA prediction and the LoRA loss falling on a fixed render are guidance tests
(tests/models/guidance/test_stable_diffusion_vsd_guidance.py)."""

import pytest
import torch

from tests.tiny_pipelines import build_tiny_sd
from tests.tiny_text import make_tiny_clip_text
from threestudio.data.uncond import make_camera_batch
from threestudio.systems.prolificdreamer import ProlificDreamer
from threestudio.utils.config import dump_config, load_config
from threestudio.utils.errors import ConfigError
from threestudio.utils.paths import REPO_ROOT as REPO

SIZE = 16
THRESHOLD = 5.0  # the coarse field's surface: softplus density 5 (the blob peaks near 10)
TINY = [
    "system.prompt_processor.prompt=a pineapple",
    "system.prompt_processor.spawn=false",
    "system.geometry.pos_encoding_config.n_levels=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
    "data.width=16",
    "data.height=16",
]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    root = tmp_path_factory.mktemp("prolific_sd")
    path = build_tiny_sd(root / "sd")
    make_tiny_clip_text(root / "sd")
    return path


def models(path, lora=True):
    keys = ["prompt_processor", "guidance"]
    args = [f"system.{k}.pretrained_model_name_or_path={path}" for k in keys]
    if lora:  # the LoRA copy starts from the same UNet
        args.append(f"system.guidance.pretrained_model_name_or_path_lora={path}")
    return args


def config(name, tiny_sd, *extra, lora=True):
    return load_config(
        f"{REPO}/configs/{name}.yaml", cli_args=TINY + models(tiny_sd, lora) + list(extra)
    )


def start(cfg):
    system = ProlificDreamer(cfg.system)
    system.on_fit_start()
    system.on_train_start()
    return system


def cameras(n=1, size=SIZE):
    elevation = torch.linspace(0.0, 30.0, n)
    azimuth = torch.linspace(-40.0, 140.0, n)
    distance = torch.full((n,), 1.5)
    fovy, lights = torch.full((n,), 60.0), torch.tensor([[0.0, 0.0, 10.0]]).repeat(n, 1)
    return make_camera_batch(elevation, azimuth, distance, fovy, size, size, lights)


def save_trial(system, cfg, folder):
    """A trial folder as launch.py leaves it: configs/parsed.yaml beside ckpts/last.ckpt."""
    (folder / "configs").mkdir(parents=True)
    (folder / "ckpts").mkdir()
    dump_config(str(folder / "configs" / "parsed.yaml"), cfg)
    ckpt = folder / "ckpts" / "last.ckpt"
    torch.save({"state_dict": system.state_dict(), "epoch": 0, "global_step": 0}, ckpt)
    return ckpt


def test_coarse_step_trains_the_lora_branch_and_not_the_pretrained_unet(tiny_sd):
    torch.manual_seed(0)
    system = start(config("prolificdreamer", tiny_sd))
    optimizer = system.configure_optimizers()["optimizer"]
    # the published groups: the LoRA branch (and its camera embedding) at the guidance's lr
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["guidance"]["lr"] == pytest.approx(1e-4)
    guidance = system.guidance
    trainable = {id(p) for p in guidance.parameters()}
    assert trainable == {id(p) for p in groups["guidance"]["params"]}
    frozen = {
        f"{tag}.{n}": p
        for tag, unet in (("unet", guidance.frozen.unet), ("unet_lora", guidance.frozen.unet_lora))
        for n, p in unet.named_parameters()
        if id(p) not in trainable
    }
    assert frozen and not any(p.requires_grad for p in frozen.values())
    before = {n: p.detach().clone() for n, p in guidance.named_parameters()}
    frozen_before = {n: p.detach().clone() for n, p in frozen.items()}
    encoding_before = [p.detach().clone() for p in system.geometry.encoding.parameters()]

    out = system.training_step(cameras(), 0)
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()

    moved = [n for n, p in guidance.named_parameters() if not torch.equal(before[n], p)]
    assert any(".lora_B" in n or n.startswith("lora_layers.") for n in moved)
    assert any(n.startswith("camera_embedding.") for n in moved)
    assert all(torch.equal(frozen_before[n], p) for n, p in frozen.items())
    # the scene learnt in the same step
    assert any(
        not torch.equal(a, p)
        for a, p in zip(encoding_before, system.geometry.encoding.parameters())
    )


def test_unknown_stage_is_a_config_error(tiny_sd):
    with pytest.raises(ConfigError, match="system.stage"):
        ProlificDreamer(config("prolificdreamer", tiny_sd, "system.stage=refine").system)
    # the VSD guidance draws no samples: said when fitting starts, not at the first validation
    system = ProlificDreamer(
        config("prolificdreamer", tiny_sd, "system.visualize_samples=true").system
    )
    with pytest.raises(ConfigError, match="system.visualize_samples"):
        system.on_fit_start()


@pytest.fixture(scope="module")
def chain(tiny_sd, tmp_path_factory):
    """coarse -> geometry -> texture, each stage built from the shipped config and the previous
    stage's trial folder."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("prolific_chain")
    coarse_cfg = config(
        "prolificdreamer", tiny_sd, f"system.geometry.isosurface_threshold={THRESHOLD}"
    )
    coarse = ProlificDreamer(coarse_cfg.system)
    coarse_ckpt = save_trial(coarse, coarse_cfg, root / "coarse")

    geometry_cfg = config(
        "prolificdreamer-geometry",
        tiny_sd,
        f"system.geometry_convert_from={coarse_ckpt}",
        "system.geometry.isosurface_resolution=32",
        lora=False,
    )
    geometry = start(geometry_cfg)
    geometry_ckpt = save_trial(geometry, geometry_cfg, root / "geometry")

    texture_cfg = config(
        "prolificdreamer-texture",
        tiny_sd,
        f"system.geometry_convert_from={geometry_ckpt}",
        "system.geometry.isosurface_resolution=32",
    )
    texture = start(texture_cfg)
    return coarse, geometry, texture


def test_geometry_stage_surface_is_the_coarse_fields_level_set(chain):
    coarse, geometry, _ = chain
    assert type(geometry.geometry).__name__ == "TetrahedraSDFGrid"
    mesh = geometry.geometry.isosurface()
    assert mesh.v_pos.shape[0] > 100
    with torch.no_grad():
        density = coarse.geometry.forward_density(mesh.v_pos)[..., 0]
    # marching tets interpolates linearly along grid edges: the vertices sit on the level set
    # to within the field's variation over a cell
    assert float((density - THRESHOLD).abs().median()) < 0.5
    # and the surface is the blob's, around the centre
    radius = mesh.v_pos.norm(dim=-1)
    assert 0.1 < float(radius.mean()) < 0.5


def test_geometry_stage_learns_from_the_normal_map_without_colour(chain):
    _, geometry, _ = chain
    batch = cameras()
    out = geometry(batch)
    assert "comp_rgb" not in out and out["comp_normal"].shape == (1, SIZE, SIZE, 3)
    assert float(out["opacity"].sum()) > 10  # the surface is in view
    assert geometry.guidance_input(out, batch) is out["comp_normal"]
    geometry.zero_grad()
    loss = geometry.training_step(batch, 0)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert float(geometry.geometry.sdf.grad.abs().sum()) > 0
    # validation images: normals and silhouette (no colour rendered)
    items = geometry.eval_image_items(out, batch)
    assert [i["type"] for i in items] == ["rgb", "grayscale"]
    assert torch.equal(items[0]["img"], out["comp_normal"][0])


def test_texture_stage_keeps_the_geometry_fixed(chain):
    _, geometry, texture = chain
    grid = texture.geometry
    assert grid.cfg.fix_geometry
    names = {n for n, _ in texture.named_parameters()}
    assert not any(n.startswith(("geometry.sdf", "geometry.deformation")) for n in names)
    optimizer = texture.configure_optimizers()["optimizer"]
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    geometry_params = {id(p) for n, p in texture.named_parameters() if n.startswith("geometry.")}
    assert geometry_params <= {id(p) for p in grid.encoding.parameters()} | {
        id(p) for p in grid.feature_network.parameters()
    }
    # the surface it renders is the geometry stage's
    before = grid.isosurface().v_pos.detach().clone()
    torch.testing.assert_close(before, geometry.geometry.isosurface().v_pos.detach())
    encoding = [p.detach().clone() for p in grid.encoding.parameters()]

    out = texture.training_step(cameras(), 0)
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    assert set(optimised) >= {id(p) for p in grid.encoding.parameters()}
    torch.testing.assert_close(grid.isosurface().v_pos, before, rtol=0, atol=0)
    assert any(not torch.equal(a, p) for a, p in zip(encoding, grid.encoding.parameters()))
    # no mesh regulariser and no volume regulariser in the texture stage
    assert texture.regularizers({"mesh": None}) == {}
