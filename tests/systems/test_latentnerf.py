"""Latent-NeRF and Sketch-Shape: latent renders reach the guidance as latents (no VAE encoder),
the refinement renders RGB through the latent adapter, and the sketch-shape loss on a sphere
guide mesh equals its value worked out by hand."""

import math

import numpy as np
import pytest
import torch
import trimesh

import threestudio
from tests.tiny_pipelines import build_tiny_sd
from tests.tiny_text import make_tiny_clip_text
from threestudio.data.uncond import RandomCameraDataModule
from threestudio.systems.latentnerf import SketchShapeLoss, load_guide_shape
from threestudio.utils.errors import UserError

LATENT = 8  # the tiny UNet's latent size: renders of this size reach it unresized


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    root = tmp_path_factory.mktemp("latentnerf_sd")
    path = build_tiny_sd(root / "sd")
    make_tiny_clip_text(root / "sd")
    return path


def system_cfg(sd_path, refinement=False, **extra):
    latent = not refinement
    cfg = {
        "refinement": refinement,
        "geometry_type": "implicit-volume",
        "geometry": {
            "n_feature_dims": 4,
            "normal_type": None,
            "density_bias": "blob_dreamfusion",
            "density_activation": "trunc_exp",
            "density_blob_scale": 5.0,
            "density_blob_std": 0.2,
            "pos_encoding_config": {"n_levels": 2, "log2_hashmap_size": 10},
        },
        "material_type": "no-material" if latent else "sd-latent-adapter-material",
        "material": {"n_output_dims": 4, "color_activation": "none"} if latent else {},
        "background_type": "neural-environment-map-background",
        "background": {"n_output_dims": 4, "color_activation": "none"} if latent else {},
        "renderer_type": "nerf-volume-renderer",
        "renderer": {"num_samples_per_ray": 16},
        "prompt_processor_type": "stable-diffusion-prompt-processor",
        "prompt_processor": {
            "pretrained_model_name_or_path": sd_path,
            "prompt": "a hamburger",
            "spawn": False,
        },
        "guidance_type": "stable-diffusion-guidance",
        "guidance": {"pretrained_model_name_or_path": sd_path},
        "loss": {"lambda_sds": 1.0, "lambda_sparsity": 5.0e-4, "lambda_opaque": 0.0},
        "optimizer": {"name": "Adam", "args": {"lr": 0.01}},
    }
    cfg.update(extra)
    return cfg


def camera_batch(size=LATENT):
    dm = RandomCameraDataModule({"height": size, "width": size, "batch_size": 1})
    dm.setup("fit")
    return dm.train_dataset.collate(None)


def start_fit(system):
    """The hooks Lightning calls up to the first training step (the occupancy grid included)."""
    system.on_fit_start()
    system.on_train_start()
    system.do_update_step(0, 0)


class Spy:
    """Records the arguments of a wrapped callable."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.fn(*args, **kwargs)


def test_latent_stage_hands_its_4_channel_render_to_the_guidance_as_latents(tiny_sd):
    torch.manual_seed(0)
    system = threestudio.find("latentnerf-system")(system_cfg(tiny_sd))
    start_fit(system)
    guidance = system.guidance
    encode = guidance.encode_images = Spy(guidance.encode_images)
    vae_encode = guidance.vae.encode = Spy(guidance.vae.encode)
    sds = guidance.sds_loss = Spy(guidance.sds_loss)
    renders = []
    render = system.renderer.forward
    system.renderer.forward = lambda **kw: renders.append(render(**kw)) or renders[-1]

    loss = system.training_step(camera_batch(), 0)["loss"]

    (out,) = renders
    assert out["comp_rgb"].shape == (1, LATENT, LATENT, 4)
    assert not encode.calls and not vae_encode.calls  # no VAE encoder in the loop
    (latents, _grad), _ = sds.calls[0]
    # the latents SDS worked on are the render itself, channels first
    assert torch.equal(latents, out["comp_rgb"].permute(0, 3, 1, 2))
    loss.backward()  # and SDS reaches the field through them
    grads = [p.grad for p in system.geometry.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_refinement_renders_rgb_through_the_adapter_and_encodes_it(tiny_sd):
    torch.manual_seed(0)
    system = threestudio.find("latentnerf-system")(system_cfg(tiny_sd, refinement=True))
    start_fit(system)
    encode = system.guidance.encode_images = Spy(system.guidance.encode_images)
    materials = []
    material = system.material.forward
    system.material.forward = lambda features, **kw: (
        materials.append((features, material(features, **kw))) or (materials[-1][1])
    )
    system.training_step(camera_batch(16), 0)
    assert len(encode.calls) == 1
    (image,), _ = encode.calls[0]
    assert image.shape[1] == 3  # RGB for the VAE
    features, rgb = materials[0]
    assert features.shape[-1] == 4 and rgb.shape[-1] == 3
    adapter = torch.tensor(
        [
            [0.298, 0.207, 0.208],
            [0.187, 0.286, 0.173],
            [-0.158, 0.189, 0.264],
            [-0.184, -0.271, -0.473],
        ]
    )
    assert torch.allclose(rgb, ((features @ adapter + 1) / 2).clamp(0, 1), atol=1e-6)


def test_adapter_material_output_by_hand():
    material = threestudio.find("sd-latent-adapter-material")({})
    features = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, -1.0, 0.25, 2.0], [4.0, 4.0, 0.0, 0.0]])
    # row 1: (0.298, 0.207, 0.208) -> (1 + c) / 2
    # row 2: R = 0.149 - 0.187 - 0.0395 - 0.368 = -0.4455, G = 0.1035 - 0.286 + 0.04725 - 0.542
    #        = -0.67725, B = 0.104 - 0.173 + 0.066 - 0.946 = -0.949
    # row 3: 4 * (0.485, 0.493, 0.381) is above 1 everywhere: clamped to 1
    expected = torch.tensor(
        [
            [0.649, 0.6035, 0.604],
            [0.27725, 0.161375, 0.0255],
            [1.0, 1.0, 1.0],
        ]
    )
    assert torch.allclose(material(features), expected, atol=1e-6)


def test_hybrid_material_activates_rgb_and_passes_latents():
    material = threestudio.find("hybrid-rgb-latent-material")({"n_output_dims": 5})
    features = torch.tensor([[0.0, 2.0, -1.0, 3.5, -7.0]], requires_grad=True)
    out = material(features)
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert torch.allclose(out, torch.tensor([[0.5, s(2.0), s(-1.0), 3.5, -7.0]]))
    out.sum().backward()  # no in-place write breaks autograd
    assert features.grad[0, 3] == 1.0


def test_validation_image_is_the_vae_decoding_or_the_linear_preview(tiny_sd):
    system = threestudio.find("latentnerf-system")(system_cfg(tiny_sd))
    latents = torch.randn(1, 16, 16, 4)
    # no guidance (e.g. nothing built yet): Latent-NeRF's linear approximation
    preview = system.decode_for_viewing(latents)
    adapter = torch.tensor(
        [
            [0.298, 0.207, 0.208],
            [0.187, 0.286, 0.173],
            [-0.158, 0.189, 0.264],
            [-0.184, -0.271, -0.473],
        ]
    )
    assert torch.allclose(preview, ((latents @ adapter + 1) / 2).clamp(0, 1))
    # with the guidance: its VAE decodes latents resized by its downsampling factor (2 here)
    start_fit(system)
    decode = system.guidance.decode_latents = Spy(system.guidance.decode_latents)
    with torch.no_grad():
        image = system.decode_for_viewing(latents)
    (decoded_in,), _ = decode.calls[0]
    assert decoded_in.shape == (1, 4, 8, 8)
    assert image.shape == (1, 16, 16, 3)
    assert not torch.allclose(image, preview)


# ---------- Sketch-Shape ----------


def write_sphere(path, centre=(1.0, -2.0, 3.0), radius=2.5):
    # a fine icosphere: its faces lie within 4e-4 of the sphere once scaled to radius 0.7
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    mesh.apply_translation(centre)
    mesh.export(str(path))
    return str(path)


def test_guide_mesh_is_centred_scaled_and_turned(tmp_path):
    # a box long along the mesh's +y (up) and deep along +z (front), far from the origin
    box = trimesh.creation.box(extents=(0.2, 1.0, 0.5))
    box.apply_translation((5.0, 5.0, 5.0))
    box.export(str(tmp_path / "box.obj"))
    vertices, faces = load_guide_shape(str(tmp_path / "box.obj"), 0.7, "+y", "+z")
    assert torch.allclose(vertices.mean(0), torch.zeros(3), atol=1e-6)
    assert math.isclose(float(vertices.norm(dim=1).max()), 0.7, rel_tol=1e-6)
    extent = vertices.max(0).values - vertices.min(0).values
    # world x (front) <- mesh z, world y <- mesh x, world z (up) <- mesh y
    scale = 0.7 / math.sqrt(0.1**2 + 0.5**2 + 0.25**2)
    assert torch.allclose(extent, torch.tensor([0.5, 0.2, 1.0]) * scale, atol=1e-6)
    assert faces.shape == (12, 3)


def test_sketch_shape_loss_on_a_sphere_by_hand(tmp_path):
    vertices, faces = load_guide_shape(write_sphere(tmp_path / "sphere.obj"), 0.7, "+y", "+z")
    loss_fn = SketchShapeLoss(vertices, faces, proximal_surface=0.3, delta=0.2)
    # points at known radii; the field's density is known at each
    radii = [0.0, 0.3, 0.55, 0.9, 1.2]
    directions = [(1, 0, 0), (0, 1, 0), (0, 0.6, 0.8), (-0.6, 0, 0.8), (0, 0, -1)]
    points = torch.tensor([[r * c for c in d] for r, d in zip(radii, directions)])
    density = torch.tensor([[20.0], [5.0], [0.0], [3.0], [0.5]])

    expected = 0.0
    for r, sigma in zip(radii, density[:, 0].tolist()):
        inside = 1.0 if r < 0.7 else 0.0
        target = min(max(inside, 1e-4), 1 - 1e-4)
        occupancy = 1 - math.exp(-0.2 * sigma)
        d = abs(r - 0.7)  # distance to the sphere of radius 0.7
        weight = 1 - math.exp(-(d**2) / (2 * 0.3**2))
        expected += -weight * (
            occupancy * math.log(target) + (1 - occupancy) * math.log(1 - target)
        )

    loss = loss_fn(points, density)
    assert math.isclose(float(loss), expected, rel_tol=2e-3)
    # without proximal weighting every point weighs 1
    unweighted = SketchShapeLoss(vertices, faces, proximal_surface=0.0)(points, density)
    assert float(unweighted) > float(loss)


def test_sketch_shape_loss_pulls_occupancy_toward_the_guide(tmp_path):
    vertices, faces = load_guide_shape(write_sphere(tmp_path / "sphere.obj"), 0.7, "+y", "+z")
    loss_fn = SketchShapeLoss(vertices, faces)
    points = torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.0, 1.5]])  # inside, outside
    density = torch.tensor([[1.0], [1.0]], requires_grad=True)
    loss_fn(points, density).backward()
    assert density.grad[0, 0] < 0 < density.grad[1, 0]  # denser inside, emptier outside


def test_sketch_shape_in_training_adds_the_shape_loss(tiny_sd, tmp_path):
    guide = write_sphere(tmp_path / "sphere.obj")
    cfg = system_cfg(tiny_sd, guide_shape=guide)
    cfg["loss"] = {**cfg["loss"], "lambda_shape": 1.0}
    torch.manual_seed(0)
    system = threestudio.find("latentnerf-system")(cfg)
    assert "shape_loss.vertices" not in system.state_dict()  # the mesh is not checkpointed
    start_fit(system)
    seen = {}
    weighted = system.weighted_loss
    system.weighted_loss = lambda terms, **kw: seen.update(terms) or weighted(terms, **kw)
    renders = []
    render = system.renderer.forward
    system.renderer.forward = lambda **kw: renders.append(render(**kw)) or renders[-1]
    system.training_step(camera_batch(), 0)
    out = renders[0]
    assert out["points"].shape[0] > 0
    assert torch.allclose(seen["loss_shape"], system.shape_loss(out["points"], out["density"]))
    assert {"loss_sds", "loss_sparsity", "loss_shape"} <= set(seen)


def test_ray_parity_and_distances_agree_with_the_winding_number_sdf():
    # the fast queries against the brute-force signed distance (winding-number sign)
    from threestudio.models.geometry.implicit_sdf import mesh_sdf
    from threestudio.utils.mesh_queries import MeshQueries
    from threestudio.utils.paths import LOAD_DIR

    vertices, faces = load_guide_shape(f"{LOAD_DIR}/shapes/teddy.obj", 0.7, "+y", "+z")
    queries = MeshQueries(vertices, faces)
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(600, 3, generator=generator) * 1.4 - 0.7
    # and points on the mesh's symmetry plane (world y = 0), where axis-aligned rays meet edges
    points[:100, 1] = 0.0
    sdf = mesh_sdf(points, vertices, faces)[:, 0]
    inside = queries.inside(points)
    assert 20 < int(inside.sum()) < 580  # both kinds of points are tested
    assert torch.equal(inside, sdf < 0)
    torch.testing.assert_close(queries.distance(points), sdf.abs(), atol=1e-5, rtol=0)


def test_missing_guide_mesh_is_one_clear_error(tiny_sd, tmp_path):
    cfg = system_cfg(tiny_sd, guide_shape=str(tmp_path / "nope.obj"))
    with pytest.raises(UserError, match="system.guide_shape"):
        threestudio.find("latentnerf-system")(cfg)


def test_shipped_teddy_is_closed_and_regenerates_identically():
    import subprocess
    import sys

    from threestudio.utils.paths import LOAD_DIR, REPO_ROOT

    mesh = trimesh.load(f"{LOAD_DIR}/shapes/teddy.obj", force="mesh", process=False)
    assert mesh.is_watertight and mesh.volume > 0  # closed, normals outward
    assert len(mesh.faces) < 2500  # small: the shape loss's distances visit every face
    proc = subprocess.run(
        [sys.executable, f"{REPO_ROOT}/scripts/make_guide_shapes.py", "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout
    # its sitting bear is taller than wide once placed (+z up)
    vertices, _ = load_guide_shape(f"{LOAD_DIR}/shapes/teddy.obj", 0.7, "+y", "+z")
    extent = (vertices.max(0).values - vertices.min(0).values).numpy()
    assert extent[2] > extent[1] > 0 and np.isfinite(extent).all()
