"""The bundled novel-view model (load/tiny-shapes-zero123): it loads through the real
``zero123-guidance`` with the shipped example images, its novel views show the conditioning
image's object (judged by the bundled classifier) as seen from the asked camera, and an SDS step
through it gives a finite gradient; the recipe's pair sampling matches the guidance's camera."""

import os

import pytest
import torch

import threestudio
from threestudio.bundled import novel_view_model as nv
from threestudio.bundled.classifier import ShapeColorClassifier
from threestudio.bundled.examples import EXAMPLE_IMAGES, example_image_path
from threestudio.bundled.shapes import COLORS, SHAPES, ShapeDataset, ShapeRenderer
from threestudio.bundled.tiny_model import BUNDLED_MODEL_PATH
from threestudio.models.guidance.zero123_guidance import Zero123ConditioningMixin

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODEL = nv.NOVEL_VIEW_MODEL_PATH

# bars set from measurement (see load/tiny-shapes-zero123/README.md)
SAMPLE_BAR = 0.85  # the classifier names shape and colour of the novel views
SAMPLE_STEPS = 25  # DDPM steps: enough for recognisable samples, inside the test's budget


def test_bundled_novel_view_model_is_small_and_complete():
    size = sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(MODEL) for f in files
    )
    assert size <= 25 * 2**20
    for part in ("unet", "vae", "image_encoder", "cc_projection", "scheduler"):
        assert os.path.isdir(os.path.join(MODEL, part)), part
    for name in ("README.md", "samples.png", "training_stats.json"):
        assert os.path.isfile(os.path.join(MODEL, name)), name


def test_pairs_share_an_instance_and_carry_the_guidance_camera():
    n = 12
    data = ShapeDataset(
        images=torch.zeros(n, 4, 4, 3, dtype=torch.uint8),
        shape_idx=torch.zeros(n, dtype=torch.long),
        color_idx=torch.zeros(n, dtype=torch.long),
        direction_idx=torch.zeros(n, dtype=torch.long),
        elevation=torch.linspace(-10, 80, n),
        azimuth=torch.linspace(-180, 170, n),
        camera_distance=torch.linspace(3.6, 4.0, n),
        group_idx=torch.tensor([0] * 5 + [1] * 4 + [2] * 3),
    )
    cond, target, camera = nv.sample_pairs(data, 200, torch.Generator().manual_seed(0))
    assert (data.group_idx[cond] == data.group_idx[target]).all()
    assert set(target.tolist()) == set(range(n))  # every view is drawn as a target

    guidance = type("G", (), {})()  # the guidance's own camera embedding, bound to a cond camera
    for i in range(3):
        c = int(cond[i])
        guidance.cfg = type("C", (), {})()
        guidance.cfg.cond_elevation_deg = float(data.elevation[c])
        guidance.cfg.cond_azimuth_deg = float(data.azimuth[c])
        guidance.cfg.cond_camera_distance = float(data.camera_distance[c])
        t = target[i : i + 1]
        expected = Zero123ConditioningMixin.camera_embedding(
            guidance, data.elevation[t], data.azimuth[t], data.camera_distance[t]
        )
        torch.testing.assert_close(camera[i : i + 1], expected)


def _guidance(name: str):
    shape, color, elevation, azimuth, distance, _ = EXAMPLE_IMAGES[name]
    return threestudio.find("zero123-guidance")(
        {
            "pretrained_model_name_or_path": MODEL,
            "cond_image_path": example_image_path(name),
            "cond_elevation_deg": elevation,
            "cond_azimuth_deg": azimuth,
            "cond_camera_distance": distance,
            "guidance_scale": 3.0,
        }
    )


@pytest.mark.slow
def test_novel_views_through_the_real_guidance():
    torch.manual_seed(0)
    renderer = ShapeRenderer(32, 32)
    # conditioning images: the two shipped examples as the guidance loads them, and two
    # renders of other objects (not training views: the examples' light, exact albedo)
    held_out = [("cylinder", "green", 20.0), ("cone", "purple", 40.0)]
    guidance = _guidance("sphere")
    pipe = guidance.pipe
    images, truths, labels, own_rows = [], [], [], []
    azimuths, elevations = [0.0, 90.0, 180.0], [0.0, 60.0]
    conditions = []
    for name in ("sphere", "torus"):
        shape, color, elevation = EXAMPLE_IMAGES[name][:3]
        guidance.prepare_embeddings(example_image_path(name))
        conditions.append((shape, color, elevation, guidance.clip_embeds, guidance.concat_latents))
    for shape, color, elevation in held_out:
        e = torch.tensor([elevation])
        image = nv.render_views(renderer, shape, color, e, torch.zeros(1), torch.full([1], 3.8))
        guidance.set_condition_image(image.permute(0, 3, 1, 2))
        conditions.append((shape, color, elevation, guidance.clip_embeds, guidance.concat_latents))
    for shape, color, elevation, clip, concat in conditions:
        cams = nv.view_grid_cameras(elevation, azimuths, elevations)
        images.append((clip, concat, cams["camera"]))
        truths.append(
            nv.render_views(
                renderer, shape, color, cams["elevation"], cams["azimuth"], cams["distance"]
            )
        )
        labels.append(list(COLORS).index(color) * len(SHAPES) + SHAPES.index(shape))
        own_rows.append(len(azimuths) * len(elevations))

    # one batched DDPM run over every view of every condition, through the guidance's parts
    from diffusers import DDPMScheduler

    cross = torch.cat([pipe.cross_attention_states(c, cam) for c, _, cam in images])
    concat = torch.cat([z.expand(cam.shape[0], -1, -1, -1) for _, z, cam in images])
    cross = torch.cat([cross, torch.zeros_like(cross)])
    concat = torch.cat([concat, torch.zeros_like(concat)])
    b = cross.shape[0] // 2
    ddpm = DDPMScheduler.from_config(pipe.scheduler.config)
    ddpm.set_timesteps(SAMPLE_STEPS)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(b, 4, pipe.latent_size, pipe.latent_size, generator=gen)
    with torch.no_grad():
        for t in ddpm.timesteps:
            c, u = pipe.predict_noise(torch.cat([z, z]), t.expand(2 * b), cross, concat).chunk(2)
            z = ddpm.step(u + 3.0 * (c - u), t, z, generator=gen).prev_sample
        samples = guidance.decode_latents(z).permute(0, 2, 3, 1)

    classifier = ShapeColorClassifier.load(os.path.join(BUNDLED_MODEL_PATH, "classifier"))
    with torch.no_grad():
        predicted = classifier.prompt_log_probs(samples).argmax(-1)
    target = torch.tensor([label for label, n in zip(labels, own_rows) for _ in range(n)])
    accuracy = (predicted == target).float().mean().item()
    print(f"novel views recognised: {accuracy:.3f} of {len(target)}")
    assert accuracy >= SAMPLE_BAR

    # the views follow the camera: each sample is nearer the ground truth of its own camera
    # than, on average, the ground truths of the other cameras of its condition
    own, other = [], []
    for i, truth in enumerate(truths):
        s = samples[sum(own_rows[:i]) : sum(own_rows[: i + 1])]
        err = (s[:, None] - truth[None]).pow(2).mean(dim=(2, 3, 4))
        d_own = err.diagonal()
        own.append(d_own)
        other.append((err.sum(1) - d_own) / (err.shape[1] - 1))
    own, other = torch.cat(own), torch.cat(other)
    closer = (own < other).float().mean().item()
    print(
        f"error to own camera {own.mean():.4f}, to the others {other.mean():.4f}; "
        f"closer to its own camera: {closer:.3f}"
    )
    assert own.mean() < 0.8 * other.mean()

    # an SDS step on a 32x32 render through the guidance gives a finite gradient
    guidance.prepare_embeddings(example_image_path("torus"))
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    out = guidance(
        rgb,
        elevation=torch.tensor([30.0, 60.0]),
        azimuth=torch.tensor([0.0, 120.0]),
        camera_distances=torch.full([2], 3.8),
    )
    out["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
