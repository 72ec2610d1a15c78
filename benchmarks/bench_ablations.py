"""Wall time of a study on Ray beside the same trials run one after another in one plain process.

Both runs happen in the same invocation on the same machine. The plain run calls `run_pipeline`
for every (method, dataset, seed) with one torch thread, as each Ray Train worker has one CPU.
From its per-trial times the script computes the ideal parallel time: the makespan of those trials
on the parallel slots that the Ray run uses (longest trial first, each to the least loaded slot).
Ray's overhead is the study's wall time minus that ideal, as a share of the study's wall time.

    .venv/bin/python benchmarks/bench_ablations.py --study paper-table4 --data data/movielens-100k
"""

from __future__ import annotations

import argparse
import heapq
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablations import ray_env  # noqa: E402  (sets Ray's environment before Ray is imported)
from ablations.driver import max_parallel_trials, run_study  # noqa: E402
from ablations.study import load_study  # noqa: E402
from ihas.data.dataset import load_prepared  # noqa: E402
from ihas.pipeline import run_pipeline  # noqa: E402


def makespan(durations: list[float], slots: int) -> float:
    """Finish time of `durations` on `slots` parallel workers, longest first to the least loaded."""
    loads = [0.0] * slots
    heapq.heapify(loads)
    for duration in sorted(durations, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + duration)
    return max(loads)


def run_plain(study, data_paths: dict[str, Path]) -> list[float]:
    torch.set_num_threads(1)
    durations = []
    for name, path in data_paths.items():
        data = load_prepared(path)
        for method in study.methods:
            for seed in study.seeds:
                start = time.perf_counter()
                metrics = run_pipeline(study.pipeline_config(method, seed), data)
                durations.append(time.perf_counter() - start)
                print(f"plain  {method:8s} {name} seed {seed}: {durations[-1]:6.1f} s, "
                      f"test AUC {metrics['test_auc']:.4f}", flush=True)
    return durations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="paper-table4")
    parser.add_argument("--data", action="append", metavar="DIR", help="prepared dataset directory (repeatable)")
    parser.add_argument("--seeds", type=int, help="run seeds 0..N-1 instead of the study's")
    args = parser.parse_args()
    study = load_study(args.study)
    if args.data:
        study = study.replace_datasets(args.data)
    if args.seeds:
        study = study.replace_seeds(args.seeds)
    paths = {spec.name: Path(spec.path) for spec in study.datasets}

    plain_start = time.perf_counter()
    durations = run_plain(study, paths)
    plain_wall = time.perf_counter() - plain_start
    plain_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    with tempfile.TemporaryDirectory(prefix="bench-ablations-") as output:
        study_start = time.perf_counter()
        message = ray_env.init_ray()
        init_s = time.perf_counter() - study_start
        slots = study.max_concurrent_trials or max_parallel_trials(
            study, ray_env.trial_driver_resources(study.resources.driver_cpus))
        print(message, flush=True)
        events: list[tuple[float, str]] = []

        def echo(line: str) -> None:
            events.append((time.perf_counter() - study_start, line))
            print(f"ray    {line}", flush=True)

        outcome = run_study(study, output, echo=echo)
        study_end = time.perf_counter() - study_start
        ray_env.shutdown_ray()
        study_wall = time.perf_counter() - study_start

    rows = [r for r in outcome.rows if r["status"] == "ok"]
    ideal = makespan(durations, slots)
    overhead = study_wall - ideal
    trial_overhead = [float(r["train_overhead_s"]) for r in rows]
    pipeline = [float(r["pipeline_s"]) for r in rows]
    reporting = [float(r["report_s"]) for r in rows]
    peaks = [float(r["peak_rss_mb"]) for r in rows]
    print()
    print(f"machine: {os.cpu_count()} CPUs; study {study.name}, {len(durations)} trials, {slots} parallel slots")
    print(f"plain process, trials one after another: {plain_wall:8.1f} s (sum of trials {sum(durations):.1f} s), "
          f"peak RSS {plain_peak_mb:.0f} MiB")
    print(f"ideal parallel time on {slots} slots:       {ideal:8.1f} s")
    print(f"study on Ray (Ray start {init_s:.1f} s incl.):  {study_wall:8.1f} s, {len(rows)} trials ok, "
          f"{outcome.failed} failed")
    starts = [t for t, line in events if "] started" in line]
    ends = [t for t, line in events if "] finished" in line or "] FAILED" in line]
    if starts and ends:
        print(f"timeline: first trial started at {starts[0]:.1f} s, last trial ended at {ends[-1]:.1f} s, "
              f"table and figures written at {study_end:.1f} s, Ray stopped at {study_wall:.1f} s")
    print(f"Ray overhead: {overhead:.1f} s = {100 * overhead / study_wall:.1f}% of the study "
          f"(target < 15%); study / plain = {study_wall / plain_wall:.2f}")
    if rows:
        print(f"per trial on Ray: pipeline {statistics.fmean(pipeline):.1f} s mean, trial wall minus pipeline "
              f"{statistics.fmean(trial_overhead):.1f} s mean ({min(trial_overhead):.1f}-{max(trial_overhead):.1f}); "
              f"reporting metrics and checkpoints inside the pipeline {statistics.fmean(reporting):.1f} s mean")
        print(f"peak RSS per Train worker: {statistics.fmean(peaks):.0f} MiB mean, {max(peaks):.0f} MiB max")
    return 0 if outcome.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
