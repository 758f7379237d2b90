"""Write the example scene of ``multiview-camera-datamodule`` to ``load/scenes/cube/``: twelve
photographs of a cube with coloured faces, rendered by the project's own rasteriser
(``nvdiff-rasterizer``, pure-PyTorch fallback on CPU) and material, and the nerfstudio-style
``transforms.json`` that poses them.

    python scripts/make_example_scene.py [--out load/scenes/cube] [--size 64]

Seeded and deterministic (no random draws). The cameras look at the cube's centre from a ring
around it; the file's world is this project's (x back, y right, z up) shifted by
``WORLD_OFFSET``, as a reconstruction tool places a scene anywhere, so that the datamodule's
re-centring has work to do: the cube's centre is at ``WORLD_OFFSET`` in the file and at the
origin after ``camera_layout: around``.
"""

import argparse
import json
import math
import os
import re
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from threestudio.bundled.shapes import COLORS, ShapeRenderer, shape_mesh  # noqa: E402
from threestudio.data.uncond import make_camera_batch, spherical_to_cartesian  # noqa: E402
from threestudio.utils.paths import LOAD_DIR  # noqa: E402
from threestudio.utils.typing import Float, Tensor  # noqa: E402

N_VIEWS = 12
ELEVATIONS_DEG = (20.0, -20.0)  # alternating, so the cameras' mean is the cube's centre
DISTANCE = 2.0
FOVY_DEG = 45.0
WORLD_OFFSET = (0.5, -0.3, 0.2)  # the cube's centre in the file's world
# the face colours, by the axis of the face's outward normal
FACE_COLORS = {
    "+x": "red",  # front (azimuth 0 looks at it)
    "-x": "green",  # back
    "+y": "blue",  # right
    "-y": "yellow",  # left
    "+z": "orange",  # top
    "-z": "purple",  # bottom
}
LIGHT_OFFSET_DEG = (30.0, 40.0)  # the light: above and to the right of each camera
LIGHT_DISTANCE = 6.0


class FaceColoredCube(torch.nn.Module):
    """The geometry interface ``nvdiff-rasterizer`` needs: the bundled cube whose albedo at a
    surface point is the colour of the face it lies on (its largest coordinate)."""

    def __init__(self) -> None:
        super().__init__()
        self.mesh = shape_mesh("cube")
        order = ["+x", "-x", "+y", "-y", "+z", "-z"]
        self.colors = torch.tensor([COLORS[FACE_COLORS[f]] for f in order], dtype=torch.float32)

    def isosurface(self):
        return self.mesh

    def forward(self, points: Float[Tensor, "*N 3"], output_normal: bool = False):
        axis = points.abs().argmax(dim=-1)
        negative = (points.gather(-1, axis[..., None])[..., 0] < 0).long()
        return {"features": self.colors.to(points)[axis * 2 + negative]}


def cameras():
    """(elevation, azimuth) in degrees of each view: a ring, elevations alternating."""
    return [(ELEVATIONS_DEG[i % len(ELEVATIONS_DEG)], 360.0 * i / N_VIEWS) for i in range(N_VIEWS)]


@torch.no_grad()
def render_view(renderer: ShapeRenderer, elevation: float, azimuth: float, size: int):
    """The view's RGB image (uint8, white background) and its camera-to-world matrix about the
    cube's centre (OpenGL convention)."""
    el, az = torch.tensor([elevation]), torch.tensor([azimuth])
    light = spherical_to_cartesian(
        el + LIGHT_OFFSET_DEG[0], az + LIGHT_OFFSET_DEG[1], torch.tensor([LIGHT_DISTANCE])
    )
    batch = make_camera_batch(
        el, az, torch.tensor([DISTANCE]), torch.tensor([FOVY_DEG]), size, size, light
    )
    out = renderer.renderer(
        mvp_mtx=batch["mvp_mtx"],
        camera_positions=batch["camera_positions"],
        light_positions=batch["light_positions"],
        height=size,
        width=size,
    )
    rgb = (out["comp_rgb"][0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return rgb, batch["c2w"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(LOAD_DIR, "scenes", "cube"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    renderer = ShapeRenderer(args.size, args.size, seed=args.seed)
    renderer.geometry = FaceColoredCube()
    renderer.renderer.set_geometry(renderer.geometry)
    focal = 0.5 * args.size / math.tan(math.radians(FOVY_DEG) / 2)
    frames = []
    for i, (elevation, azimuth) in enumerate(cameras()):
        rgb, c2w = render_view(renderer, elevation, azimuth, args.size)
        name = f"images/frame_{i + 1:05d}.png"
        Image.fromarray(np.ascontiguousarray(rgb)).save(os.path.join(args.out, name), optimize=True)
        c2w = c2w.double().clone()
        c2w[:3, 3] += torch.tensor(WORLD_OFFSET, dtype=torch.float64)
        matrix = [[round(float(v), 6) for v in row] for row in c2w]
        frames.append({"file_path": name, "transform_matrix": matrix})
    transforms = {
        "camera_model": "OPENCV",
        "fl_x": round(focal, 6),
        "fl_y": round(focal, 6),
        "cx": args.size / 2,
        "cy": args.size / 2,
        "w": args.size,
        "h": args.size,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "frames": frames,
    }
    path = os.path.join(args.out, "transforms.json")
    text = json.dumps(transforms, indent=2)
    # one line per matrix row, as nerfstudio's files read
    text = re.sub(
        r"\[\s+([-0-9.e,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text
    )
    with open(path, "w") as f:
        f.write(text + "\n")
    print(f"wrote {path} and {len(frames)} images of {args.size}x{args.size}")


if __name__ == "__main__":
    main()
