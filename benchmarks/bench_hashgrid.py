"""Hash-grid forward+backward time next to the memory floor measured in the same run.

The floor is one ``index_select`` gather plus one ``index_add_`` scatter of exactly the rows the
encoding touches (the same index tensor), i.e. what any gather-based implementation must pay.

    OMP_NUM_THREADS=2 python benchmarks/bench_hashgrid.py --device cpu
"""

import argparse
import os
import platform
import statistics
import time

import torch

from threestudio.models.networks import (
    HashGridTensors,
    get_encoding,
    hash_grid_indices_and_weights,
)

CONFIG = {
    "otype": "HashGrid",
    "n_levels": 16,
    "n_features_per_level": 2,
    "log2_hashmap_size": 19,
    "base_resolution": 16,
    "per_level_scale": 1.447269237440378,  # 16 -> 2048 over 16 levels
}


def median_ms(fn, device: torch.device, repeats: int) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up (allocator, caches, lazy init)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def bench(n_points: int, device: torch.device, repeats: int, input_grad: bool) -> dict:
    torch.manual_seed(0)
    encoding = get_encoding(3, CONFIG).to(device)
    core = encoding.encoding.encoding
    x = torch.rand(n_points, 3, device=device, requires_grad=input_grad)

    def encode_forward_backward():
        out = encoding(x)
        out.backward(torch.ones_like(out))

    def encode_forward():
        with torch.no_grad():
            encoding(x)

    layout = core.layout
    consts = HashGridTensors(layout, device)
    index, _, _ = hash_grid_indices_and_weights(x.detach(), layout, consts, torch.float32)
    index = consts.global_index(index).view(-1)
    table = core.params.detach().view(-1, layout.n_features)
    rows = torch.randn(index.numel(), layout.n_features, device=device)

    def floor():
        table.index_select(0, index)
        torch.zeros_like(table).index_add_(0, index, rows)

    # the same rows visited point by point (levels interleaved), as a naive layout would
    point_major = index.view(layout.n_levels, n_points, -1).transpose(0, 1).reshape(-1)

    def floor_point_major():
        table.index_select(0, point_major)
        torch.zeros_like(table).index_add_(0, point_major, rows)

    return {
        "points": n_points,
        "rows": index.numel(),
        "fwd_ms": median_ms(encode_forward, device, repeats),
        "fwd_bwd_ms": median_ms(encode_forward_backward, device, repeats),
        "floor_ms": median_ms(floor, device, repeats),
        "floor_point_major_ms": median_ms(floor_point_major, device, repeats),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--log2-points", type=int, nargs="+", default=[16, 18])
    parser.add_argument("--input-grad", action="store_true", help="also d out / d x")
    args = parser.parse_args()
    device = torch.device(args.device)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"threads {torch.get_num_threads()}, device {device}, load average {load}"
    )
    print(f"config {CONFIG}, input grad {args.input_grad}")
    header = "points   rows        fwd ms   fwd+bwd ms   floor ms   ratio   floor(point-major) ms"
    print(header)
    for log2_n in args.log2_points:
        r = bench(2**log2_n, device, args.repeats, args.input_grad)
        print(
            f"2^{log2_n:<5} {r['rows']:<11} {r['fwd_ms']:7.1f}   {r['fwd_bwd_ms']:9.1f}   "
            f"{r['floor_ms']:8.1f}   {r['fwd_bwd_ms'] / r['floor_ms']:5.2f}   "
            f"{r['floor_point_major_ms']:8.1f}"
        )


if __name__ == "__main__":
    main()
