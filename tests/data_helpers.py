"""Helpers shared by the data tests: run the CLI in-process and read raw sample lines."""

from __future__ import annotations

from pathlib import Path

from ihas.cli import main as cli_main

CRITEO = Path("criteo-1tb-day0-10k") / "day_0.part.txt"


def run_prepare(capsys, *args: str) -> tuple[int, str, str]:
    """Run `ihas prepare ARGS`; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli_main(["prepare", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    """The `ihas prepare: error:` lines of stderr (log lines excluded)."""
    return [line for line in err.splitlines() if line.startswith("ihas prepare: error:")]


def criteo_lines(shared_data: Path) -> list[bytes]:
    return (shared_data / CRITEO).read_bytes().splitlines(keepends=True)
