"""The `ihas` console script: one subcommand per module under `ihas.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Subcommand name -> module under ihas.commands. Each module defines
# `add_arguments(parser)` and `main(args) -> int`.
COMMANDS = {
    "prepare": ("prepare", "Turn a raw click log into an encoded Parquet dataset."),
    "run": ("run", "Run one iHAS variant end to end on a prepared dataset."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ihas", description="iHAS for deep learning recommendation models.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="verbosity of progress messages (default: INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"ihas.commands.{module_name}")
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    return int(args._module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
