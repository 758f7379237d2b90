"""Time the pure-PyTorch rasteriser: 512x512 render of a ~100k-face sphere on the CPU.

Usage: python benchmarks/bench_rasterize.py [--res 512] [--repeats 5] [--batch 1]
Prints median milliseconds for rasterize, interpolate, antialias and backward (through
antialias + interpolate to vertex positions), plus the machine load (``uptime``).
"""

import argparse
import math
import os
import statistics
import subprocess
import sys
import time

import torch
import trimesh

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from threestudio.kernels.rasterizer import NVDiffRasterizerContext


def perspective(fovy=math.radians(40), near=0.1, far=10.0):
    f = 1 / math.tan(fovy / 2)
    return torch.tensor(
        [
            [f, 0, 0, 0],
            [0, f, 0, 0],
            [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
            [0, 0, -1, 0],
        ],
        dtype=torch.float32,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--res", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sphere = trimesh.creation.uv_sphere(radius=1.0, count=[158, 160])
    verts = torch.tensor(sphere.vertices, dtype=torch.float32, device=args.device)
    faces = torch.tensor(sphere.faces, dtype=torch.int32, device=args.device)
    verts[:, 2] -= 3.0  # in front of a camera at the origin looking down -z
    mvp = perspective().to(args.device)[None].repeat(args.batch, 1, 1)
    ctx = NVDiffRasterizerContext("cuda", args.device)
    print(
        f"threads {torch.get_num_threads()}, backend {ctx.backend}, {faces.shape[0]} faces, {args.batch}x{args.res}x{args.res}"
    )

    timings = {"rasterize": [], "interpolate": [], "antialias": [], "backward": []}
    for _ in range(args.repeats + 1):
        v = verts.clone().requires_grad_(True)
        pos = ctx.vertex_transform(v, mvp)
        t0 = time.perf_counter()
        rast, _ = ctx.rasterize(pos, faces, (args.res, args.res))
        t1 = time.perf_counter()
        nrm, _ = ctx.interpolate_one(v, rast, faces)
        t2 = time.perf_counter()
        img = ctx.antialias(nrm, rast, pos, faces)
        t3 = time.perf_counter()
        img.square().sum().backward()
        t4 = time.perf_counter()
        for k, dt in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            timings[k].append(dt * 1000)
    covered = int((rast[..., 3] > 0).sum())
    print(f"covered pixels {covered}")
    for k, ts in timings.items():
        print(f"{k:12s} median {statistics.median(ts[1:]):8.1f} ms  (min {min(ts[1:]):.1f})")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
