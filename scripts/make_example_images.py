"""Write the example inputs of ``single-image-datamodule`` to ``load/images/``: an RGBA view, a
depth map and a normal map of shapes of the bundled world, rendered by the project's own
rasteriser (``nvdiff-rasterizer``, pure-PyTorch fallback on CPU) and material.

    python scripts/make_example_images.py [--out load/images] [--size 128]

Seeded and deterministic (no random draws; the seed only fixes the camera stream the renderer
is built with). The file conventions are the datamodule's (see ``threestudio/data/image.py``):
depth = distance along the camera axis, scaled to [0, 1] over the object (near 0, far 1) and 0
outside; normal = world-space unit normal n stored so that the datamodule's ``ref_normal`` is
(1 - n) / 2 in x, y, z order (the file's B, G, R channels, as OpenCV reads them), 0 outside.
"""

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from threestudio.bundled.examples import (  # noqa: E402
    EXAMPLE_IMAGES,
    LIGHT_DISTANCE,
    LIGHT_OFFSET_DEG,
)
from threestudio.bundled.shapes import COLORS, ShapeRenderer, shape_mesh  # noqa: E402
from threestudio.data.uncond import make_camera_batch, spherical_to_cartesian  # noqa: E402
from threestudio.utils.paths import LOAD_DIR  # noqa: E402

# which object each example shows, from which camera: threestudio.bundled.examples
EXAMPLES = EXAMPLE_IMAGES


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0.0, 1.0) * 255).round().to(torch.uint8).cpu().numpy()


@torch.no_grad()
def render_example(renderer: ShapeRenderer, shape: str, color: str, camera, size: int):
    elevation, azimuth, distance, fovy = (torch.tensor([v], dtype=torch.float32) for v in camera)
    light = spherical_to_cartesian(
        elevation + LIGHT_OFFSET_DEG[0],
        azimuth + LIGHT_OFFSET_DEG[1],
        torch.tensor([LIGHT_DISTANCE]),
    )
    batch = make_camera_batch(elevation, azimuth, distance, fovy, size, size, light)
    mesh = shape_mesh(shape)
    renderer.geometry.mesh = mesh
    renderer.geometry.albedo = torch.as_tensor(COLORS[color], dtype=torch.float32)
    out = renderer.renderer(
        mvp_mtx=batch["mvp_mtx"],
        camera_positions=batch["camera_positions"],
        light_positions=batch["light_positions"],
        height=size,
        width=size,
    )
    alpha = out["opacity"][0]  # antialiased coverage [H, W, 1]

    # depth and coverage from the same rasteriser
    ctx = renderer.renderer.context(torch.device("cpu"))
    v_clip = ctx.vertex_transform(mesh.v_pos, batch["mvp_mtx"])
    rast, _ = ctx.rasterize(v_clip, mesh.t_pos_idx, (size, size))
    covered = rast[0, ..., 3:] > 0
    points, _ = ctx.interpolate_one(mesh.v_pos, rast, mesh.t_pos_idx)
    forward = -batch["c2w"][0, :3, 2]
    z = ((points[0] - batch["camera_positions"][0]) * forward).sum(-1, keepdim=True)
    z_fg = z[covered]
    depth = torch.where(covered, (z - z_fg.min()) / (z_fg.max() - z_fg.min()), torch.zeros_like(z))

    # straight alpha: the surface colour where covered, the white render at the antialiased rim
    rgb = torch.where(covered, out["comp_rgb_fg"][0], out["comp_rgb"][0])
    normal, _ = ctx.interpolate_one(mesh.v_nrm, rast, mesh.t_pos_idx)
    normal = F.normalize(normal[0], dim=-1)
    normal_xyz = torch.where(covered, (1 - normal) / 2, torch.zeros_like(normal))
    return {
        "rgba": np.concatenate([to_uint8(rgb), to_uint8(alpha)], axis=-1),
        "depth": to_uint8(depth)[..., 0],
        "normal": to_uint8(normal_xyz)[..., ::-1],  # the file holds z, y, x as R, G, B
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(LOAD_DIR, "images"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    renderer = ShapeRenderer(args.size, args.size, seed=args.seed)
    for name, (shape, color, *camera) in EXAMPLES.items():
        images = render_example(renderer, shape, color, camera, args.size)
        for kind, array in images.items():
            path = os.path.join(args.out, f"{name}_{kind}.png")
            Image.fromarray(np.ascontiguousarray(array)).save(path, optimize=True)
            print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
