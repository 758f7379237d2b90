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

from threestudio.kernels.hash_grid import HashGridTensors, hash_grid_indices_and_weights
from threestudio.models.networks import get_encoding

CONFIG = {
    "otype": "HashGrid",
    "n_levels": 16,
    "n_features_per_level": 2,
    "log2_hashmap_size": 19,
    "base_resolution": 16,
    "per_level_scale": 1.447269237440378,  # 16 -> 2048 over 16 levels
}


def interleaved_medians(fns: dict, device: torch.device, repeats: int) -> dict:
    """Median ms of each function; one round runs every function once, so load from other
    processes on a shared machine hits all of them alike."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns.values():  # warm-up (allocator, caches, lazy init)
        fn()
    sync()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(t) for name, t in times.items()}


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
    index = consts.global_index(index).reshape(-1)  # level-major, point-major
    table = core.params.detach().view(-1, layout.n_features)
    rows = torch.randn(index.numel(), layout.n_features, device=device)

    def floor():
        table.index_select(0, index)
        torch.zeros_like(table).index_add_(0, index, rows)

    # the same with every buffer allocated once up front: no page faults of fresh memory in
    # the timed loop (the strictest floor; large fresh allocations fault in page by page)
    gathered = torch.empty(index.numel(), layout.n_features, device=device)
    grad_table = torch.zeros_like(table)

    def floor_preallocated():
        torch.index_select(table, 0, index, out=gathered)
        grad_table.zero_().index_add_(0, index, rows)

    # the same scatter done as the encoding does it: rows of two features as complex numbers
    index32 = index.int()
    complex_rows = torch.view_as_complex(rows)

    def floor_complex():
        table.index_select(0, index32)
        torch.view_as_complex(torch.zeros_like(table)).index_add_(0, index32, complex_rows)

    # the same rows visited point by point (levels interleaved), as a naive layout would
    point_major = index.view(layout.n_levels, n_points, -1).transpose(0, 1).reshape(-1)

    def floor_point_major():
        table.index_select(0, point_major)
        torch.zeros_like(table).index_add_(0, point_major, rows)

    result = interleaved_medians(
        {
            "fwd_ms": encode_forward,
            "fwd_bwd_ms": encode_forward_backward,
            "floor_ms": floor,
            "floor_prealloc_ms": floor_preallocated,
            "floor_complex_ms": floor_complex,
            "floor_point_major_ms": floor_point_major,
        },
        device,
        repeats,
    )
    return {"points": n_points, "rows": index.numel(), **result}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=7)
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
    header = (
        "points  rows      fwd ms  fwd+bwd ms  floor ms  ratio  floor(prealloc) ms  ratio  "
        "floor(complex scatter) ms  floor(point-major) ms"
    )
    print(header)
    for log2_n in args.log2_points:
        r = bench(2**log2_n, device, args.repeats, args.input_grad)
        print(
            f"2^{log2_n:<5} {r['rows']:<9} {r['fwd_ms']:6.1f}  {r['fwd_bwd_ms']:10.1f}  "
            f"{r['floor_ms']:8.1f}  {r['fwd_bwd_ms'] / r['floor_ms']:5.2f}  "
            f"{r['floor_prealloc_ms']:18.1f}  {r['fwd_bwd_ms'] / r['floor_prealloc_ms']:5.2f}  "
            f"{r['floor_complex_ms']:25.1f}  {r['floor_point_major_ms']:21.1f}"
        )


if __name__ == "__main__":
    main()
