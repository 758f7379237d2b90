"""Write the guide meshes under ``load/shapes/`` that the Sketch-Shape commands use.

``load/shapes/teddy.obj`` (the file name threestudio's README uses for Sketch-Shape) is a
sitting teddy bear built from primitives: ellipsoids for the body, head, snout, ears, arms and
legs, joined by a smooth minimum of their distance functions and meshed with marching cubes into
one closed surface. The OBJ follows the usual convention of mesh files (+y up, facing +z), which
the Latent-NeRF system turns into threestudio's frame (+z up, facing +x). Everything is fixed
arithmetic: the same file comes out on every run.

    python scripts/make_guide_shapes.py            # writes load/shapes/teddy.obj
    python scripts/make_guide_shapes.py --check    # fails if the committed file is stale
"""

import argparse
import io
import os
import sys

import mcubes
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = os.path.join(REPO, "load", "shapes")

# (centre xyz, radii xyz): +y up, +z the front the bear faces
TEDDY_PARTS = [
    ((0.00, 0.00, 0.00), (0.48, 0.58, 0.42)),  # body
    ((0.00, 0.86, 0.04), (0.36, 0.34, 0.34)),  # head
    ((0.00, 0.78, 0.36), (0.16, 0.12, 0.13)),  # snout
    ((-0.27, 1.13, 0.00), (0.12, 0.12, 0.07)),  # ears
    ((0.27, 1.13, 0.00), (0.12, 0.12, 0.07)),
    ((-0.46, 0.14, 0.12), (0.15, 0.32, 0.15)),  # arms
    ((0.46, 0.14, 0.12), (0.15, 0.32, 0.15)),
    ((-0.26, -0.48, 0.30), (0.19, 0.17, 0.32)),  # legs, sitting: pointing forward
    ((0.26, -0.48, 0.30), (0.19, 0.17, 0.32)),
]
BLEND = 0.06  # width of the smooth minimum that rounds the joints
RESOLUTION = 22  # marching-cubes cells along the longest side of the bounding box


def ellipsoid_sdf(points: np.ndarray, centre, radii) -> np.ndarray:
    """An approximate signed distance to an ellipsoid (exact for spheres)."""
    radii = np.asarray(radii, dtype=np.float64)
    q = (points - np.asarray(centre)) / radii
    return (np.linalg.norm(q, axis=-1) - 1.0) * radii.min()


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def teddy_mesh():
    lo = np.array([-0.75, -0.75, -0.55])
    hi = np.array([0.75, 1.35, 0.75])
    step = (hi - lo).max() / RESOLUTION
    axes = [np.arange(lo[i] - step, hi[i] + 2 * step, step) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    sdf = None
    for centre, radii in TEDDY_PARTS:
        part = ellipsoid_sdf(grid, centre, radii)
        sdf = part if sdf is None else smooth_min(sdf, part, BLEND)
    vertices, faces = mcubes.marching_cubes(-sdf, 0.0)  # positive inside
    vertices = vertices * step + np.array([a[0] for a in axes])
    faces = faces.astype(np.int64)
    # outward normals: the signed volume of a closed surface is positive
    tri = vertices[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    if volume < 0:
        faces = faces[:, ::-1]
    return vertices, faces


def obj_text(vertices: np.ndarray, faces: np.ndarray, comment: str) -> str:
    out = io.StringIO()
    out.write(f"# {comment}\n# written by scripts/make_guide_shapes.py\n")
    for v in vertices:
        out.write("v {:.4f} {:.4f} {:.4f}\n".format(*(0.0 if abs(x) < 5e-5 else x for x in v)))
    for f in faces:
        out.write("f {} {} {}\n".format(*(f + 1)))
    return out.getvalue()


def shapes():
    vertices, faces = teddy_mesh()
    return {"teddy.obj": obj_text(vertices, faces, "a sitting teddy bear, +y up, facing +z")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for name, text in shapes().items():
        path = os.path.join(SHAPES, name)
        if args.check:
            if not os.path.isfile(path) or open(path).read() != text:
                stale.append(path)
            continue
        os.makedirs(SHAPES, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(path, REPO)} ({len(text) // 1024} KiB)")
    if stale:
        print("stale (run python scripts/make_guide_shapes.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
