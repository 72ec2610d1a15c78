"""Speed and peak memory of `ihas prepare` on a Criteo-layout file, beside a plain pyarrow.csv read.

Run: .venv/bin/python benchmarks/bench_prepare.py [--rows 1000000] [--workdir DIR]

The input is the real Criteo 10k sample (../shared/data) repeated to the requested row count, at
half, full and double that count, so the peak memory can be compared across sizes (the
vocabulary is the same at every size, so the peak should not move). Each measurement runs in its
own child process, so its peak resident memory (ru_maxrss) is its own. The reference is
`pyarrow.csv.read_csv` of the same file (multithreaded, type inference), which loads the whole
table into memory. `prepare` figures are end to end: sha256 of the source, both passes, Parquet.
CPU seconds (user + system) are printed beside the wall time: on a machine shared with other work
the wall time moves with the load, the CPU time much less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "criteo-1tb-day0-10k" / "day_0.part.txt"
SAMPLE_ROWS = 10_000


def make_input(path: Path, rows: int) -> None:
    data = SAMPLE.read_bytes()
    with open(path, "wb") as fh:
        for _ in range(rows // SAMPLE_ROWS):
            fh.write(data)


def child(kind: str, path: str, out: str) -> None:
    """Run one measurement in this process and print a JSON line with seconds and peak memory."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    if kind == "pyarrow":
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter="\t"),
                               read_options=pacsv.ReadOptions(autogenerate_column_names=True))
        rows = table.num_rows
    else:
        from ihas.data.prepare import prepare
        from ihas.data.reader import open_source
        from ihas.data.schema import preset

        meta = prepare(open_source(preset("criteo"), path), out)
        rows = sum(meta["rows"].values())
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_start
    print(json.dumps({"kind": kind, "rows": rows, "seconds": seconds, "cpu_seconds": cpu,
                      "peak_mib": usage.ru_maxrss / 1024}))


def measure(kind: str, path: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(out)],
                          capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="row count of the main run (multiple of 10,000)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the inputs (default: a temp dir)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-prepare-", dir=args.workdir))
    try:
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
        print("| rows | input MiB | pyarrow.csv read s (CPU s) | rows/s | peak MiB "
              "| ihas prepare s (CPU s) | rows/s | peak MiB |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for rows in (args.rows // 2, args.rows, args.rows * 2):
            path = work / f"criteo_{rows}.txt"
            make_input(path, rows)
            ref = measure("pyarrow", path, work / "unused")
            ours = measure("prepare", path, work / "out")
            assert ours["rows"] == ref["rows"] == rows, (ours, ref)
            print(f"| {rows:,} | {path.stat().st_size / 2**20:,.0f} | {ref['seconds']:.2f} ({ref['cpu_seconds']:.1f}) "
                  f"| {rows / ref['seconds']:,.0f} | {ref['peak_mib']:,.0f} "
                  f"| {ours['seconds']:.2f} ({ours['cpu_seconds']:.1f}) | {rows / ours['seconds']:,.0f} "
                  f"| {ours['peak_mib']:,.0f} |", flush=True)
            path.unlink()
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
