"""The renderers are differentiable in the camera: gradients with respect to rays_o / rays_d
(volume renderers), c2w through ray generation, and mvp_mtx / c2w for the rasteriser agree
with central finite differences on analytic scenes (float64, fixed samples: which samples a ray
takes is not differentiable by design, the composited colour along them is)."""

import pytest
import torch

from tests.analytic_scene import (
    AnalyticBlobs,
    AnalyticSphereSDF,
    FixedMesh,
    camera,
    fix_samples,
    make_renderer,
    rays_of,
)
from threestudio.models.camera_refinement import CameraRefinement
from threestudio.utils.ops import get_mvp_matrix, get_projection_matrix

SIZE = 6
EPS = 1e-6


def image_loss(out, weights):
    """A fixed random linear read-out of every image the renderer returns."""
    return sum((out[k] * w).sum() for k, w in weights.items())


def read_out_weights(images):
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in images.items()}


def check_directional_derivatives(fn, x, n_dirs=3, rtol=1e-4, eps=EPS, atol=1e-7):
    """``fn(x)`` (a scalar) has gradient ``g`` with ``g . u`` matching the central difference
    along random directions ``u``; returns ``g``."""
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()
    assert grad.abs().max() > 0, "no gradient reached the camera"
    gen = torch.Generator().manual_seed(1)
    for _ in range(n_dirs):
        u = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        with torch.no_grad():
            fd = (fn(x + eps * u) - fn(x - eps * u)) / (2 * eps)
        analytic = (grad * u).sum()
        assert torch.isclose(analytic, fd, rtol=rtol, atol=atol), (float(analytic), float(fd))
    return grad


VOLUME_CASES = {
    "nerf": ("nerf-volume-renderer", AnalyticBlobs, {}),
    "nerf-importance": (
        "nerf-volume-renderer",
        AnalyticBlobs,
        {"estimator": "importance", "num_samples_per_ray_importance": 16},
    ),
    "neus": ("neus-volume-renderer", AnalyticSphereSDF, {"learned_variance_init": 0.2}),
    "neus-volsdf": ("neus-volume-renderer", AnalyticSphereSDF, {"use_volsdf": True}),
    # training mode: jittered samples (then fixed), no chunking, the per-sample outputs
    "nerf-train": ("nerf-volume-renderer", AnalyticBlobs, {"randomized": True}),
    "neus-train": ("neus-volume-renderer", AnalyticSphereSDF, {"randomized": True}),
}


def volume_renderer(case, rays_o, rays_d):
    renderer_type, geometry_cls, extra = VOLUME_CASES[case]
    cfg = {"num_samples_per_ray": 48, "grid_prune": False, "near_plane": 1.0, "far_plane": 4.0}
    renderer = make_renderer(renderer_type, geometry_cls({}), **cfg, **extra)
    renderer.train(case.endswith("-train"))
    return fix_samples(renderer, rays_o, rays_d)


@pytest.mark.parametrize("case", list(VOLUME_CASES))
def test_volume_renderers_have_ray_gradients(case):
    c2w = camera(20.0, 35.0, 2.5)
    rays_o, rays_d = rays_of(c2w, SIZE)
    renderer = volume_renderer(case, rays_o, rays_d)
    light = torch.zeros(1, 3, dtype=torch.float64)
    keys = ("comp_rgb", "opacity", "depth")
    out = renderer(rays_o, rays_d, light)
    weights = read_out_weights({k: out[k] for k in keys})
    assert 0.05 < float(out["opacity"].max()) and float(out["opacity"].min()) < 0.95

    def of_origins(o):
        return image_loss(renderer(o, rays_d, light), weights)

    def of_directions(d):
        return image_loss(renderer(rays_o, d, light), weights)

    check_directional_derivatives(of_origins, rays_o)
    check_directional_derivatives(of_directions, rays_d)


@pytest.mark.parametrize("case", ["nerf", "neus"])
def test_volume_renderers_have_c2w_gradients_through_ray_generation(case):
    c2w = camera(-10.0, 120.0, 2.5)
    rays_o, rays_d = rays_of(c2w, SIZE)
    renderer = volume_renderer(case, rays_o, rays_d)
    light = torch.zeros(1, 3, dtype=torch.float64)
    weights = read_out_weights({"comp_rgb": renderer(rays_o, rays_d, light)["comp_rgb"]})

    def of_pose(pose):
        return image_loss(renderer(*rays_of(pose, SIZE), light), weights)

    grad = check_directional_derivatives(of_pose, c2w)
    # the bottom row [0, 0, 0, 1] takes no part in ray generation
    assert float(grad[:, 3].abs().max()) == 0.0


def test_camera_deltas_get_the_rendered_image_gradient():
    """Through CameraRefinement: the image's gradient in the 6 pose-delta numbers of each of two
    images matches finite differences, and a view's delta gets no gradient from the other view."""
    c2w = torch.cat([camera(20.0, 35.0, 2.5), camera(-5.0, 160.0, 2.2)])
    rays_o, rays_d = rays_of(c2w, SIZE)
    renderer = volume_renderer("nerf", rays_o, rays_d)
    refinement = CameraRefinement({"enabled": True, "n_images": 3})
    light = torch.zeros(2, 3, dtype=torch.float64)
    batch = {"rays_o": rays_o, "rays_d": rays_d, "c2w": c2w, "index": torch.tensor([2, 0])}
    weights = read_out_weights({"comp_rgb": renderer(rays_o, rays_d, light)["comp_rgb"]})
    weights["comp_rgb"][1] = 0  # only the first view (image 2) is read out

    def of_delta(delta):
        params = {"rotation": delta[:, :3], "translation": delta[:, 3:]}
        refined = torch.func.functional_call(refinement, params, (batch,))
        return image_loss(renderer(refined["rays_o"], refined["rays_d"], light), weights)

    delta = torch.zeros(3, 6, dtype=torch.float64)
    delta[2] = torch.tensor([0.01, -0.02, 0.015, 0.02, 0.01, -0.03])
    grad = check_directional_derivatives(of_delta, delta, rtol=1e-3)
    assert float(grad[2].abs().min()) > 0
    assert float(grad[0].abs().max()) == 0.0 and float(grad[1].abs().max()) == 0.0


# rasterisation runs in float32 (as nvdiffrast does): larger steps, looser agreement
RAST_FD = {"eps": 3e-4, "rtol": 1e-2, "atol": 1e-3}


def rasterizer_setup():
    c2w = camera(25.0, 30.0, 2.0).float()
    proj = get_projection_matrix(0.8, 1.0, 0.1, 100.0)
    mesh = FixedMesh({"dtype": "float32"})
    renderer = make_renderer("nvdiff-rasterizer", mesh, context_type="cuda")
    return renderer, c2w, proj


def test_rasterizer_has_mvp_gradients():
    renderer, c2w, proj = rasterizer_setup()
    size = 12
    position = c2w[:, :3, 3]
    light = torch.zeros(1, 3)
    mvp = get_mvp_matrix(c2w, proj[None])
    out = renderer(mvp, position, light, size, size)
    keys = ("comp_rgb", "opacity")
    opacity = out["opacity"]
    assert 0 < float(opacity.mean()) < 1  # silhouette edges in view
    weights = read_out_weights({k: out[k] for k in keys})

    def of_mvp(m):
        return image_loss(renderer(m, position, light, size, size), weights)

    check_directional_derivatives(of_mvp, mvp, **RAST_FD)


def test_rasterizer_has_c2w_gradients():
    renderer, c2w, proj = rasterizer_setup()
    size = 12
    light = torch.zeros(1, 3)
    weights = None

    def of_pose(pose):
        out = renderer(get_mvp_matrix(pose, proj[None]), pose[:, :3, 3], light, size, size)
        return image_loss(out, weights)

    with torch.no_grad():
        out = renderer(get_mvp_matrix(c2w, proj[None]), c2w[:, :3, 3], light, size, size)
    weights = read_out_weights({"comp_rgb": out["comp_rgb"]})
    # a pose entry moves the image more than an mvp entry: a smaller step
    check_directional_derivatives(of_pose, c2w, **dict(RAST_FD, eps=1e-4))
