"""pbr-material and its split-sum lighting against values computed here by other means: the BRDF
table against a direct integral over light directions, the prefilter against a brute-force sum,
the irradiance of a half-lit sky against its closed form, and the shading of a flat patch under a
constant environment against the split-sum formula written out by hand."""

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import threestudio
from threestudio.models.lights import split_sum
from threestudio.models.materials.pbr_material import BRDF_LUT_PATH
from threestudio.utils.errors import ConfigError

SIZE = 256


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def lut_table() -> np.ndarray:
    return np.fromfile(BRDF_LUT_PATH, dtype=np.float32).reshape(SIZE, SIZE, 2)


def direct_split_sum(n_dot_v: float, roughness: float, n_theta=1200, n_phi=600):
    """(A, B) by integrating f(l) (n . l) over light directions l (midpoint rule in the polar
    angle and azimuth of l about n): f = D G F / (4 (n . v)(n . l)) with GGX D (alpha =
    roughness^2), height-correlated Smith G and F split into 1 - Fc and Fc = (1 - v . h)^5."""
    a2 = roughness**4
    theta = (np.arange(n_theta) + 0.5) / n_theta * (math.pi / 2)
    phi = (np.arange(n_phi) + 0.5) / n_phi * math.pi  # the integrand is even in phi: double it
    t, p = np.meshgrid(theta, phi, indexing="ij")
    light = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1)
    view = np.array([math.sqrt(1.0 - n_dot_v**2), 0.0, n_dot_v])
    half = light + view
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    n_dot_h, v_dot_h, n_dot_l = half[..., 2], half @ view, light[..., 2]

    def smith_lambda(mu):
        tan2 = (1.0 - mu**2) / mu**2
        return (np.sqrt(1.0 + a2 * tan2) - 1.0) / 2.0

    ndf = a2 / (math.pi * (n_dot_h**2 * (a2 - 1.0) + 1.0) ** 2)
    g = 1.0 / (1.0 + smith_lambda(n_dot_v) + smith_lambda(n_dot_l))
    cos_weighted = ndf * g / (4.0 * n_dot_v)  # f (n . l) without the Fresnel term
    fc = (1.0 - v_dot_h) ** 5
    d_omega = np.sin(t) * (math.pi / 2 / n_theta) * (math.pi / n_phi) * 2.0
    return float(((1 - fc) * cos_weighted * d_omega).sum()), float(
        (fc * cos_weighted * d_omega).sum()
    )


# ---------------------------------------------------------------- the BRDF table


@pytest.mark.parametrize("row,col", [(60, 100), (128, 180), (200, 40), (255, 250)])
def test_lut_entries_equal_a_direct_integral(row, col):
    a, b = lut_table()[row, col]
    roughness, n_dot_v = (row + 0.5) / SIZE, (col + 0.5) / SIZE
    a_ref, b_ref = direct_split_sum(n_dot_v, roughness)
    assert a == pytest.approx(a_ref, abs=3e-3)
    assert b == pytest.approx(b_ref, abs=2e-3)


def test_lut_known_values_and_energy_bounds():
    lut = lut_table()
    # a near-mirror seen head-on reflects everything with the Fresnel of normal incidence
    assert lut[0, SIZE - 1] == pytest.approx([1.0, 0.0], abs=1e-4)
    assert (lut >= 0).all() and (lut.sum(-1) <= 1.0 + 1e-4).all()  # no energy is created
    # head-on, rougher surfaces lose more light to masking and shadowing
    head_on = lut[:, SIZE - 1].sum(-1)
    assert (np.diff(head_on) <= 1e-6).all() and head_on[-1] < 0.5
    # the Fresnel share B grows towards grazing angles (n . v -> 0) on a smooth surface
    assert lut[20, 5, 1] > 10 * lut[20, 200, 1]


# ---------------------------------------------------------------- lat-long maps


def test_latlong_convention_is_envlights():
    image = torch.arange(8 * 16, dtype=torch.float32).view(8, 16, 1)
    # +y is the top row (clamped at the pole), -z the middle of the map (u = 0.5)
    up = split_sum.sample_latlong(image, torch.tensor([[0.0, 1.0, 0.0]]))
    assert float(up) == pytest.approx(float(image[0].mean()), abs=0.5 * 16)  # within the top row
    front = split_sum.sample_latlong(image, torch.tensor([[0.0, 0.0, -1.0]]))
    assert float(front) == pytest.approx(float(image[3:5, 7:9].mean()))
    # every texel centre direction reads back its own value
    dirs = split_sum.latlong_directions(8, 16)
    assert torch.allclose(split_sum.sample_latlong(image, dirs), image, atol=1e-3)


def test_prefilter_equals_a_brute_force_sum():
    torch.manual_seed(0)
    image = torch.rand(8, 16, 3)
    kernel = split_sum.specular_kernel(0.4)
    dirs = split_sum.latlong_directions(8, 16).double().reshape(-1, 3)
    omega = split_sum.texel_solid_angles(8, 16)[:, None].expand(8, 16).reshape(-1)
    weights = kernel((dirs @ dirs.T).clamp(-1, 1)) * omega[None]
    brute = (weights @ image.double().reshape(-1, 3)) / weights.sum(1, keepdim=True)
    out = split_sum.prefilter_latlong(image, kernel)
    assert torch.allclose(out.double(), brute.view(8, 16, 3), atol=1e-5)


def test_irradiance_of_a_half_lit_sky():
    # radiance 1 above the horizon (y > 0), 0 below: irradiance / pi = (1 + cos beta) / 2 at a
    # normal beta from +y
    height = 32
    image = torch.zeros(height, 2 * height, 3)
    image[: height // 2] = 1.0
    out = split_sum.prefilter_latlong(image, split_sum.diffuse_kernel)
    theta, _ = split_sum.latlong_angles(height, 2 * height)
    expected = (1.0 + theta.cos()) / 2.0
    assert torch.allclose(out[..., 0].mean(1).double(), expected, atol=0.02)
    assert torch.allclose(out[..., 0], out[..., 0, :1], atol=1e-5)  # the same along each row


def test_roughness_to_level_follows_envlights_schedule():
    r = torch.tensor([[0.0], [0.08], [0.29], [0.5], [0.75], [1.0]])
    levels = split_sum.roughness_to_level(r)[:, 0]
    assert torch.allclose(levels, torch.tensor([0.0, 0.0, 2.0, 4.0, 4.5, 5.0]), atol=1e-5)
    assert split_sum.level_roughness(0) == pytest.approx(0.08)
    assert split_sum.level_roughness(4) == pytest.approx(0.5)
    assert split_sum.level_roughness(5) == 1.0


# ---------------------------------------------------------------- the material


def write_hdr(path, rgb, height=8):
    image = np.ones((height, 2 * height, 3), np.float32) * np.asarray(rgb, np.float32)
    assert cv2.imwrite(str(path), image[..., ::-1].copy())
    return str(path)


def make_material(tmp_path, rgb=(0.3, 0.25, 0.2), **cfg):
    path = write_hdr(tmp_path / "constant.hdr", rgb)
    return threestudio.find("pbr-material")({"environment_texture": path, **cfg})


def features_for(albedo, metallic, roughness, bump=(0.5, 0.5, 0.5), m=(0.0, 0.9), r=(0.08, 0.9)):
    """Features whose sigmoid decodes to the given values (the published ranges)."""
    values = list(albedo) + [(metallic - m[0]) / (m[1] - m[0]), (roughness - r[0]) / (r[1] - r[0])]
    return torch.tensor([[logit(x) for x in values + list(bump)]])


def test_flat_patch_equals_the_hand_computed_split_sum(tmp_path):
    scale = 2.0
    material = make_material(tmp_path, environment_scale=scale, use_bump=False)
    # a patch facing +z seen at n . v and roughness on texel centres of the table
    row, col = 128, 180
    roughness, n_dot_v = (row + 0.5) / SIZE, (col + 0.5) / SIZE
    albedo, metallic = (0.8, 0.5, 0.2), 0.3
    normal = torch.tensor([[0.0, 0.0, 1.0]])
    view = torch.tensor([[math.sqrt(1 - n_dot_v**2), 0.0, n_dot_v]])  # towards the camera
    color = material(
        features=features_for(albedo, metallic, roughness)[:, :5],
        viewdirs=-view,
        shading_normal=normal,
    )
    # constant radiance L: prefiltered and irradiance maps are L everywhere
    radiance = np.array([0.3, 0.25, 0.2]) * scale
    a, b = direct_split_sum(n_dot_v, roughness)
    f0 = 0.04 * (1 - metallic) + metallic * np.array(albedo)
    expected = np.array(albedo) * (1 - metallic) * radiance + radiance * (f0 * a + b)
    assert expected.max() < 1.0  # not clamped
    assert color[0].numpy() == pytest.approx(expected, abs=2e-3)


def sky_material(tmp_path, **cfg):
    """Lit by a bright upper half with a sun and a black lower half: shading depends on the
    normal and, through the prefiltered levels, on roughness."""
    path = tmp_path / "sky.hdr"
    sky = np.zeros((16, 32, 3), np.float32)
    sky[:8] = 0.6
    sky[2, 10] = 20.0
    assert cv2.imwrite(str(path), sky)
    return threestudio.find("pbr-material")({"environment_texture": str(path), **cfg})


def test_a_flat_bump_leaves_the_normal_and_a_tilted_one_turns_it(tmp_path):
    material = sky_material(tmp_path, use_bump=True)
    flat = sky_material(tmp_path, use_bump=False)
    # a patch facing the sky's up (+y) tilts towards the horizon
    normal = torch.tensor([[0.0, 1.0, 0.0]])
    tangent = torch.tensor([[1.0, 0.0, 0.0]])
    viewdirs = F.normalize(torch.tensor([[-0.3, -1.0, 0.2]]), dim=-1)  # camera to point
    feats = features_for((0.6, 0.6, 0.6), 0.5, 0.3)
    plain = flat(features=feats[:, :5], viewdirs=viewdirs, shading_normal=normal)
    unbumped = material(features=feats, viewdirs=viewdirs, shading_normal=normal, tangent=tangent)
    assert torch.allclose(unbumped, plain, atol=1e-6)
    # bump channels decoding to (1, 0.5, 1): offset (1, 0, 1) in tangent space -> (1, 0, 1)/sqrt2
    tilted_feats = features_for((0.6, 0.6, 0.6), 0.5, 0.3, bump=(0.999999, 0.5, 0.999999))
    tilted = material(
        features=tilted_feats, viewdirs=viewdirs, shading_normal=normal, tangent=tangent
    )
    m = material.decode(tilted_feats)
    expected = material.shade(
        m["albedo"], m["metallic"], m["roughness"], F.normalize(normal + tangent), viewdirs
    )
    assert torch.allclose(tilted, expected, atol=1e-4)
    assert not torch.allclose(tilted, plain, atol=1e-3)


def test_gradients_reach_every_material_channel(tmp_path):
    material = sky_material(tmp_path)
    feats = features_for((0.4, 0.5, 0.6), 0.5, 0.4).repeat(64, 1)
    feats = (feats + 0.3 * torch.randn_like(feats)).requires_grad_(True)
    normal = F.normalize(torch.randn(64, 3), dim=-1)
    tangent = F.normalize(torch.linalg.cross(normal, torch.randn(64, 3)), dim=-1)
    color = material(features=feats, viewdirs=-normal, shading_normal=normal, tangent=tangent)
    color.sum().backward()
    assert torch.isfinite(feats.grad).all()
    assert (feats.grad.abs().sum(0) > 0).all()  # albedo, metallic, roughness and bump channels


def test_export_and_too_few_features(tmp_path):
    material = make_material(tmp_path)
    out = material.export(features_for((0.2, 0.4, 0.6), 0.45, 0.49))
    assert out["albedo"][0].tolist() == pytest.approx([0.2, 0.4, 0.6], abs=1e-5)
    assert float(out["metallic"]) == pytest.approx(0.45, abs=1e-5)
    assert float(out["roughness"]) == pytest.approx(0.49, abs=1e-5)
    assert out["bump"][0].tolist() == pytest.approx([0.5, 0.5, 1.0], abs=1e-5)  # flat
    with pytest.raises(ConfigError, match="n_feature_dims"):
        material.export(torch.zeros(1, 5))
    with pytest.raises(ConfigError, match="min_roughness"):
        make_material(tmp_path, min_roughness=0.5, max_roughness=0.2)
