"""Render + backward benchmark of nerf-volume-renderer on a hash-grid density field.

    OMP_NUM_THREADS=2 python benchmarks/bench_render.py --device cpu
    python benchmarks/bench_render.py --device cuda

The field follows DreamFusion's default implicit-volume: HashGrid (16 levels x 2 features,
table 2^19, base resolution 16, per-level scale 1.447) + a 64-neuron, 1-hidden-layer MLP, with
Magic3D's density blob so that the scene has empty space for the occupancy grid to prune.
"""

import argparse
import math
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import threestudio  # noqa: E402
from threestudio.models.background.base import BaseBackground  # noqa: E402
from threestudio.models.geometry.base import BaseImplicitGeometry, contract_to_unisphere  # noqa: E402
from threestudio.models.materials.base import BaseMaterial  # noqa: E402
from threestudio.models.networks import get_encoding, get_mlp  # noqa: E402
from threestudio.utils.ops import get_activation, get_ray_directions, get_rays  # noqa: E402


class HashGridDensity(BaseImplicitGeometry):
    @dataclass
    class Config(BaseImplicitGeometry.Config):
        blob_density: float = 10.0
        blob_radius: float = 0.5
        analytic: bool = False  # the blob alone: isolates the renderer's own cost

    cfg: Config

    def configure(self):
        super().configure()
        self.points_queried = {"no_grad": 0, "grad": 0}
        self.blob_features = torch.nn.Parameter(torch.zeros(4))
        self.encoding = get_encoding(
            3,
            {
                "otype": "HashGrid",
                "n_levels": 16,
                "n_features_per_level": 2,
                "log2_hashmap_size": 19,
                "base_resolution": 16,
                "per_level_scale": 1.447269237440378,
            },
        )
        self.mlp = get_mlp(
            self.encoding.n_output_dims,
            4,
            {"otype": "VanillaMLP", "activation": "ReLU", "n_neurons": 64, "n_hidden_layers": 1},
        )

    def _raw(self, points):
        self.points_queried["grad" if torch.is_grad_enabled() else "no_grad"] += points.shape[0]
        if self.cfg.analytic:
            out = self.blob_features.expand(points.shape[0], 4)
        else:
            x = contract_to_unisphere(points, self.bbox)
            out = self.mlp(self.encoding(x.view(-1, 3)))
        blob = self.cfg.blob_density * (
            1 - points.norm(dim=-1, keepdim=True) / self.cfg.blob_radius
        )
        density = get_activation("shifted_softplus")(out[:, :1] + blob)
        return density, torch.sigmoid(out[:, 1:])

    def forward_density(self, points):
        return self._raw(points)[0]

    def forward(self, points, output_normal=False):
        density, features = self._raw(points)
        return {"density": density, "features": features}


class DiffuseColor(BaseMaterial):
    def forward(self, features, **kwargs):
        return features


class WhiteBackground(BaseBackground):
    def forward(self, dirs):
        return torch.ones_like(dirs)


def camera_rays(size: int, device):
    fovy = math.radians(40.0)
    directions = get_ray_directions(size, size, 0.5 * size / math.tan(fovy / 2))
    eye = torch.tensor([2.5, 0.0, 0.5])
    forward = F.normalize(-eye, dim=0)
    right = F.normalize(torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0])), dim=0)
    up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.stack([right, up, -forward], 1)
    c2w[:3, 3] = eye
    rays_o, rays_d = get_rays(directions, c2w[None], keepdim=True, normalize=True)
    return rays_o.to(device), rays_d.to(device), eye[None].to(device)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=512, help="num_samples_per_ray")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--field", default="hashgrid", choices=["hashgrid", "blob"])
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    geometry = HashGridDensity({"analytic": args.field == "blob"}).to(device)
    renderer = threestudio.find("nerf-volume-renderer")(
        {"num_samples_per_ray": args.samples},
        geometry=geometry,
        material=DiffuseColor(),
        background=WhiteBackground(),
    ).to(device)
    rays_o, rays_d, lights = camera_rays(args.size, device)
    n_rays = args.size * args.size

    renderer.train()
    t0 = time.perf_counter()
    for step in range(0, 256, 16):  # the warm-up grid updates of the first 256 steps
        renderer.do_update_step(0, step)
    grid_s = time.perf_counter() - t0
    occupied = renderer.estimator.binaries.float().mean().item()

    def step():
        out = renderer(rays_o, rays_d, lights)
        loss = out["comp_rgb"].mean() + out["opacity"].mean()
        loss.backward()
        geometry.zero_grad(set_to_none=True)
        return out

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    geometry.points_queried = {"no_grad": 0, "grad": 0}
    times, counts, hit_counts = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
        counts.append(int(out["num_samples"]))
        hit_counts.append(int((out["opacity"] > 1e-3).sum()))
    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (torch.cuda peak allocated)"
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = f"{rss / 1024:.0f} MiB process max RSS (+{(rss - rss_before) / 1024:.0f} MiB in timed loop)"
    n = statistics.median(counts)
    queried = {k: v / args.repeats / n_rays for k, v in geometry.points_queried.items()}
    print(
        f"device: {device}, field {args.field}, image {args.size}x{args.size}, "
        f"num_samples_per_ray {args.samples}, torch threads {torch.get_num_threads()}"
    )
    print(f"occupied grid cells: {occupied:.3f} (16 warm-up updates: {grid_s:.2f} s)")
    print(
        f"samples per ray after pruning: {n / n_rays:.1f} (all rays), "
        f"{n / max(statistics.median(hit_counts), 1):.1f} (rays with opacity > 1e-3); "
        f"unpruned march would be up to {args.samples}"
    )
    print(
        f"field queries per ray: {queried['no_grad']:.1f} without grad (alpha pruning pass), "
        f"{queried['grad']:.1f} with grad"
    )
    print(
        f"forward+backward: median {statistics.median(times):.0f} ms, "
        f"min {min(times):.0f} ms over {args.repeats} runs"
    )
    print(f"peak memory: {peak}")


if __name__ == "__main__":
    main()
