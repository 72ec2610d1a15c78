"""Training and inference throughput of each baseline beside the Base DLRM, measured in the same run.

Every method runs on the same prepared dataset with the same epoch count per training stage (early
stopping off), one method after the other in this process, in an order that alternates between
repeats. Two figures per method:
- training samples/s: training rows consumed by all epochs of all of the method's stages, divided by
  the wall time of the run before its final evaluation. Search work without training rows (such as
  OptEmbed's evolutionary search) counts in the time, so this is the method's end-to-end cost per
  training row.
- inference samples/s: test rows scored per second over the whole test split, after one warm-up batch.
  The test split is repeated `--test-copies` times (default 20) so that one pass takes long enough
  to time; the AUC is unchanged by the repetition.
Ratios are Base / method for training (how many times slower than Base) and method / Base for
inference.

Usage: .venv/bin/python benchmarks/bench_baselines.py --data DIR [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import time

import numpy as np
import torch

from ihas.config import PipelineConfig
from ihas.data.dataset import Split, load_prepared
from ihas.pipeline import run_pipeline
from ihas.reporting import LocalReporter

METHODS = ["base", "pep", "autofield", "optembed", "adafs-soft", "adafs-hard", "optfs"]


def config_for(method: str, epochs: int, seed: int) -> PipelineConfig:
    """Give every training stage `epochs` epochs, with early stopping off."""
    return PipelineConfig.from_dict({
        "variant": method, "seed": seed,
        "train": {"max_epochs": epochs, "patience": epochs},
        "baseline": {
            "pep": {"search_epochs": epochs},
            "autofield": {"search_epochs": epochs},
            "optembed": {"supernet_epochs": epochs},
            "adafs-soft": {"pretrain_epochs": epochs},
            "adafs-hard": {"pretrain_epochs": epochs},
            # OptFS needs at least two search epochs (its rewind epoch is 1).
            "optfs": {"search_epochs": max(epochs, 2)},
        },
    })


def measure(method: str, data, epochs: int, seed: int) -> dict[str, float]:
    reporter = LocalReporter()
    started = time.perf_counter()
    metrics = run_pipeline(config_for(method, epochs, seed), data, reporter)
    wall = time.perf_counter() - started
    # Rows with a train_loss are training epochs of `fit`; each consumed the whole training split.
    epochs_run = sum(1 for row in reporter.history if "train_loss" in row)
    # The final scoring of the validation and test splits, estimated from the timed test pass.
    evaluation = float(metrics["inference_seconds"]) * (len(data.valid) + len(data.test)) / len(data.test)
    train_seconds = max(wall - evaluation, 1e-9)
    return {"epochs": epochs_run, "train_samples_per_s": epochs_run * len(data.train) / train_seconds,
            "inference_samples_per_s": float(metrics["inference_samples_per_s"]), "test_auc": float(metrics["test_auc"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="directory written by `ihas prepare`")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of every training stage (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every method; medians are printed (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    parser.add_argument("--test-copies", type=int, default=20,
                        help="times the test split is repeated for the inference timing (default 20)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    data = load_prepared(args.data)
    if args.test_copies > 1:
        test = Split(x=np.ascontiguousarray(np.tile(data.test.x, (args.test_copies, 1))),
                     y=np.tile(data.test.y, args.test_copies))
        data = dataclasses.replace(data, test=test)
    print(f"data {args.data}: {len(data.train)} train / {len(data.test)} test rows, {data.num_fields} fields; "
          f"{args.epochs} epochs per stage, {args.repeats} repeats, {torch.get_num_threads()} torch threads")

    # One throwaway run first: the first optimizer and autograd calls of a process import and set
    # up parts of torch, which took seconds here and would otherwise land on one method.
    measure("base", data, 1, seed=0)
    results: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    for repeat in range(args.repeats):
        order = METHODS if repeat % 2 == 0 else list(reversed(METHODS))
        for method in order:
            results[method].append(measure(method, data, args.epochs, seed=0))
            print(f"  repeat {repeat}: {method} done", flush=True)

    def median(method: str, key: str) -> float:
        return statistics.median(r[key] for r in results[method])

    base_train, base_infer = median("base", "train_samples_per_s"), median("base", "inference_samples_per_s")
    print()
    print("| method | epochs | training samples/s | Base / method | inference samples/s | method / Base |")
    print("|---|---|---|---|---|---|")
    for method in METHODS:
        train, infer = median(method, "train_samples_per_s"), median(method, "inference_samples_per_s")
        print(f"| {method} | {int(median(method, 'epochs'))} | {train:,.0f} | {base_train / train:.2f} | "
              f"{infer:,.0f} | {infer / base_infer:.2f} |")


if __name__ == "__main__":
    main()
