"""Write the example capture of ``co3d-datamodule`` to ``load/co3d/``: eight posed views of the
bundled world's orange sphere in the CO3D layout (images, soft masks, float16 depth PNGs and a
gzipped ``frame_annotations.jgz``), rendered by the project's own rasteriser
(``nvdiff-rasterizer``, pure-PyTorch fallback on CPU) and material.

    python scripts/make_example_co3d.py [--out load/co3d] [--size 64]

Seeded and deterministic (no random draws). The capture's world is not the normalised one, so
that the datamodule's normalisation is exercised: y points down (as in COLMAP reconstructions),
the sphere's centre is at ``SPHERE_CENTER`` and one unit of the object frame is ``WORLD_SCALE``
units. Cameras look at points near (not at) the centre, and the principal point is off the
image centre, so that each view shows the sphere off-centre. Cameras are stored as CO3Dv2 does:
PyTorch3D's ``R``, ``T`` (X_cam = X_world @ R + T) and NDC intrinsics in which the shorter side
spans [-1, 1]; depth is the distance along the camera axis in world units, 0 off the object.
"""

import argparse
import gzip
import json
import math
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from threestudio.bundled.shapes import COLORS, ShapeRenderer, shape_mesh  # noqa: E402
from threestudio.data.co3d import intrinsic_projection  # noqa: E402
from threestudio.data.uncond import look_at, spherical_to_cartesian  # noqa: E402
from threestudio.utils.ops import get_mvp_matrix  # noqa: E402
from threestudio.utils.paths import LOAD_DIR  # noqa: E402

CATEGORY, SEQUENCE = "toy", "orange_sphere"
SHAPE, COLOR = "sphere", "orange"
SPHERE_RADIUS = 0.5  # in the object frame (threestudio.bundled.shapes.shape_mesh)
# object frame (z up, sphere at the origin) -> capture world: z up becomes -y, then scaled
OBJECT_TO_WORLD_ROTATION = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
WORLD_SCALE = 2.5
SPHERE_CENTER = (0.4, -0.3, 2.0)  # in the capture world
N_VIEWS = 8
ELEVATIONS_DEG = (15.0, 30.0)  # alternating
CAMERA_DISTANCE = 2.4  # object frame
FOVY_DEG = 40.0
PRINCIPAL_OFFSET_PX = (2.5, -1.5)  # (x, y) from the image centre
# object frame: every camera aims at this point beside the centre, so the sphere sits at a
# different place in each view
LOOK_AT_POINT = (0.12, -0.08, 0.06)
BACKGROUND = (0.78, 0.8, 0.82)  # the captured "room"
LIGHT_OFFSET_DEG = (30.0, 40.0)  # the light: above and to the right of the camera
LIGHT_DISTANCE = 6.0


def object_to_world() -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = WORLD_SCALE * OBJECT_TO_WORLD_ROTATION
    m[:3, 3] = SPHERE_CENTER
    return m


def view_cameras(index: int):
    """Object-frame camera position, OpenGL camera-to-world, light position of view ``index``."""
    azimuth = torch.tensor([360.0 * index / N_VIEWS])
    elevation = torch.tensor([ELEVATIONS_DEG[index % 2]])
    position = spherical_to_cartesian(elevation, azimuth, torch.tensor([CAMERA_DISTANCE]))
    target = torch.tensor([LOOK_AT_POINT])
    _, c2w = look_at(position, target)
    light = spherical_to_cartesian(
        elevation + LIGHT_OFFSET_DEG[0],
        azimuth + LIGHT_OFFSET_DEG[1],
        torch.tensor([LIGHT_DISTANCE]),
    )
    return position, c2w, light


def pytorch3d_viewpoint(c2w_gl_world: np.ndarray, size: int, focal_px: float, principal_px):
    """CO3Dv2's viewpoint entry of an OpenGL camera-to-world matrix in the capture world."""
    c2w = c2w_gl_world.copy()
    # OpenGL (x right, y up, z back) -> PyTorch3D (x left, y up, z forward)
    c2w[:3, :3] = c2w[:3, :3] @ np.diag([-1.0, 1.0, -1.0])
    R = c2w[:3, :3]
    T = -R.T @ c2w[:3, 3]
    half = size / 2.0
    return {
        "R": R.tolist(),
        "T": T.tolist(),
        "focal_length": [focal_px / half, focal_px / half],
        "principal_point": [(half - principal_px[0]) / half, (half - principal_px[1]) / half],
        "intrinsics_format": "ndc_isotropic",
    }


@torch.no_grad()
def render_view(renderer: ShapeRenderer, index: int, size: int):
    mesh = shape_mesh(SHAPE)
    renderer.geometry.mesh = mesh
    renderer.geometry.albedo = torch.as_tensor(COLORS[COLOR], dtype=torch.float32)
    position, c2w, light = view_cameras(index)
    focal = 0.5 * size / math.tan(math.radians(FOVY_DEG) / 2)
    principal = (size / 2 + PRINCIPAL_OFFSET_PX[0], size / 2 + PRINCIPAL_OFFSET_PX[1])
    proj = intrinsic_projection(focal, focal, principal[0], principal[1], size, size)
    mvp = get_mvp_matrix(c2w, proj[None])
    out = renderer.renderer(
        mvp_mtx=mvp, camera_positions=position, light_positions=light, height=size, width=size
    )
    alpha = out["opacity"][0].clamp(0, 1)
    rgb = out["comp_rgb_fg"][0] * alpha + torch.tensor(BACKGROUND) * (1 - alpha)

    ctx = renderer.renderer.context(torch.device("cpu"))
    rast, _ = ctx.rasterize(ctx.vertex_transform(mesh.v_pos, mvp), mesh.t_pos_idx, (size, size))
    covered = rast[0, ..., 3:] > 0
    points, _ = ctx.interpolate_one(mesh.v_pos, rast, mesh.t_pos_idx)
    z = ((points[0] - position[0]) * -c2w[0, :3, 2]).sum(-1, keepdim=True)
    depth = torch.where(covered, z * WORLD_SCALE, torch.zeros_like(z))[..., 0]

    c2w_world = object_to_world() @ c2w[0].double().numpy()
    c2w_world[:3, :3] /= WORLD_SCALE  # rotation only; the position keeps the scale
    return {
        "rgb": (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy(),
        "mask": (alpha[..., 0] * 255).round().to(torch.uint8).numpy(),
        "depth": depth.numpy().astype(np.float16).view(np.uint16),
        "viewpoint": pytorch3d_viewpoint(c2w_world, size, focal, principal),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(LOAD_DIR, "co3d"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    renderer = ShapeRenderer(args.size, args.size, seed=args.seed)
    sequence_dir = os.path.join(args.out, CATEGORY, SEQUENCE)
    for sub in ("images", "masks", "depths"):
        os.makedirs(os.path.join(sequence_dir, sub), exist_ok=True)
    frames = []
    for index in range(N_VIEWS):
        view = render_view(renderer, index, args.size)
        name = f"frame{index + 1:06d}"
        rel = {
            "image": f"{CATEGORY}/{SEQUENCE}/images/{name}.png",
            "mask": f"{CATEGORY}/{SEQUENCE}/masks/{name}.png",
            "depth": f"{CATEGORY}/{SEQUENCE}/depths/{name}.png.geometric.png",
        }
        Image.fromarray(view["rgb"]).save(os.path.join(args.out, rel["image"]), optimize=True)
        Image.fromarray(view["mask"]).save(os.path.join(args.out, rel["mask"]), optimize=True)
        Image.fromarray(view["depth"]).save(os.path.join(args.out, rel["depth"]), optimize=True)
        frames.append(
            {
                "sequence_name": SEQUENCE,
                "frame_number": index,
                "frame_timestamp": float(index),
                "image": {"path": rel["image"], "size": [args.size, args.size]},
                "depth": {"path": rel["depth"], "scale_adjustment": 1.0, "mask_path": None},
                "mask": {"path": rel["mask"], "mass": float(view["mask"].sum() / 255.0)},
                "viewpoint": view["viewpoint"],
                "meta": {"frame_type": "train_known"},
            }
        )
    path = os.path.join(args.out, CATEGORY, "frame_annotations.jgz")
    # mtime=0: the same bytes on every run
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(json.dumps(frames, indent=1).encode())
    total = sum(
        os.path.getsize(os.path.join(root, n))
        for root, _, names in os.walk(args.out)
        for n in names
    )
    print(f"wrote {len(frames)} views to {args.out} ({total} bytes)")


if __name__ == "__main__":
    main()
