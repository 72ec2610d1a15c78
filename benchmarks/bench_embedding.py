"""Time the embedding lookups of the hot loop against simpler references measured in the same run.

Run: .venv/bin/python benchmarks/bench_embedding.py [--batch 2048] [--repeats 30]

Each figure is the median over `repeats` passes of one batch of Criteo-like ids (39 fields), either
forward with autograd, forward in eval mode without it (inference: `MixedDimEmbedding` reads its
packed copy then), or forward plus backward. The cases of one comparison alternate within every
repeat, so load from other processes on the machine affects them alike. Ratios are reference / ours.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn

from ihas.models.embedding import FieldEmbedding, MixedDimEmbedding

WARMUP = 3


class PerFieldEmbedding(nn.Module):
    """Reference: one nn.Embedding per kept field and a Python loop over the fields."""

    def __init__(self, field_dims, dims):
        super().__init__()
        self.kept = [f for f, d in enumerate(dims) if d > 0]
        self.tables = nn.ModuleList(nn.Embedding(field_dims[f], dims[f]) for f in self.kept)

    def forward(self, x):
        return torch.cat([table(x[:, f]) for f, table in zip(self.kept, self.tables)], dim=1)


Case = Callable[[], torch.Tensor]


def compare(cases: dict[str, tuple[nn.Module, Case]], repeats: int, backward: bool) -> dict[str, float]:
    """Return the median seconds per pass of each case; a case is (module, function making its output)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for step in range(repeats + WARMUP):
        for name, (module, run) in cases.items():
            start = time.perf_counter()
            out = run()
            if backward:
                out.sum().backward()
                module.zero_grad(set_to_none=True)
            if step >= WARMUP:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description="Time FieldEmbedding and MixedDimEmbedding against references.")
    parser.add_argument("--batch", type=int, default=2048, help="rows per batch")
    parser.add_argument("--repeats", type=int, default=30, help="timed passes per case")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 keeps torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    # Criteo-like layout: 13 small numeric fields and 26 categorical fields of up to 100k values.
    field_dims = [int(v) for v in torch.randint(20, 200, (13,), generator=generator)]
    field_dims += [int(v) for v in torch.randint(10, 100_000, (26,), generator=generator)]
    x64 = torch.stack([torch.randint(0, n, (args.batch,), generator=generator) for n in field_dims], dim=1)
    x32 = x64.to(torch.int32)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{len(field_dims)} fields, {sum(field_dims)} table rows")

    embedding = FieldEmbedding(field_dims, 16)
    for backward in (False, True):
        label = "forward+backward" if backward else "forward"
        t = compare({"int64": (embedding, lambda: embedding(x64)),
                     "int32": (embedding, lambda: embedding(x32)),
                     "int32 cast": (embedding, lambda: embedding(x32.long()))}, args.repeats, backward)
        print(f"FieldEmbedding {label}: int64 ids {t['int64'] * 1e3:.2f} ms, int32 ids {t['int32'] * 1e3:.2f} ms "
              f"(int64 / int32 = {t['int64'] / t['int32']:.2f}), int32 cast to int64 in the pass "
              f"{t['int32 cast'] * 1e3:.2f} ms (cast / int32 = {t['int32 cast'] / t['int32']:.2f})")

    layouts = {
        "uniform dim 16": [16] * len(field_dims),
        "dims 0..16 mixed": [int(v) for v in torch.randint(0, 17, (len(field_dims),), generator=generator)],
        "dims in {0, 8, 16}": [int(v) * 8 for v in torch.randint(0, 3, (len(field_dims),), generator=generator)],
    }
    for name, dims in layouts.items():
        grouped = MixedDimEmbedding(field_dims, dims)
        reference = PerFieldEmbedding(field_dims, dims)
        for label, backward, grad in (("forward", False, True), ("inference (no autograd)", False, False),
                                      ("forward+backward", True, True)):
            # The packed copy is read in eval mode without autograd, as in validation and inference.
            grouped.train(grad)
            with torch.set_grad_enabled(grad):
                t = compare({"grouped": (grouped, lambda: grouped(x32)),
                             "per-field": (reference, lambda: reference(x32))}, args.repeats, backward)
            print(f"MixedDimEmbedding {name} ({len(grouped.tables)} tables) {label}: grouped "
                  f"{t['grouped'] * 1e3:.2f} ms, per-field loop {t['per-field'] * 1e3:.2f} ms, "
                  f"per-field / grouped = {t['per-field'] / t['grouped']:.2f}")


if __name__ == "__main__":
    main()
