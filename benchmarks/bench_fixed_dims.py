"""Time the cluster models of the transfer methods against the full backbone, measured in the same run.

Run: .venv/bin/python benchmarks/bench_fixed_dims.py [--batch 65536] [--repeats 20] [--keep 8]

A transferred cluster model (`FixedDimsModel`) scores at full width D and zeroes the dropped dims
with a mask, so its forward pass should cost about as much as the full backbone's. The DLRM row
sets the narrow `MixedDimDLRM` that iHAS retrains beside the full DLRM for comparison. Each figure
is the median over `repeats` forward passes of one batch of Criteo-like ids (39 fields, no grad,
eval mode). The cases of one backbone alternate within every repeat, so load from other processes
affects them alike. Ratios are full backbone / cluster model (above 1: the cluster model is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ihas.config import ModelConfig
from ihas.models.factory import build_backbone
from ihas.models.fixed_dims import build_cluster_model

FIELD_DIMS = [50, 500, 300, 40, 2000, 800, 300, 80, 500, 60, 20, 50, 100,
              1000, 500, 100000, 50000, 200, 20, 10000, 500, 3, 5000, 50, 4, 20000,
              20, 10000, 2000, 40, 8000, 10, 3000, 100, 3, 15000, 9, 15, 5000]
WARMUP = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=65536, help="rows per forward pass (default: 65536)")
    parser.add_argument("--repeats", type=int, default=20, help="timed passes per case (default: 20)")
    parser.add_argument("--keep", type=int, default=8, help="dims kept per field out of 16 (default: 8)")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = ModelConfig()
    dims = [args.keep] * len(FIELD_DIMS)
    x = torch.stack([torch.randint(0, d, (args.batch,)) for d in FIELD_DIMS], dim=1).to(torch.int32)
    print(f"batch {args.batch}, {len(FIELD_DIMS)} fields, {args.keep} of {config.embed_dim} dims kept, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'backbone':<10} {'full ms':>9} {'cluster ms':>11} {'full / cluster':>15}")
    for name in ("fm", "wide_deep", "deepfm", "dlrm"):
        full = build_backbone(name, FIELD_DIMS, config).eval()
        cluster = build_cluster_model(name, FIELD_DIMS, dims, config).eval()
        times: dict[str, list[float]] = {"full": [], "cluster": []}
        with torch.no_grad():
            for repeat in range(WARMUP + args.repeats):
                for label, model in (("full", full), ("cluster", cluster)):
                    started = time.perf_counter()
                    model(x)
                    if repeat >= WARMUP:
                        times[label].append(time.perf_counter() - started)
        full_ms = 1000 * statistics.median(times["full"])
        cluster_ms = 1000 * statistics.median(times["cluster"])
        print(f"{name:<10} {full_ms:>9.1f} {cluster_ms:>11.1f} {full_ms / cluster_ms:>15.2f}")


if __name__ == "__main__":
    main()
