"""Command-line pieces shared by `python -m ablations` and `python -m tune`: log level and error exit."""

from __future__ import annotations

import argparse
import logging
import sys

EXIT_USAGE = 2  # exit status of a run stopped by invalid input (a study, a path, an option)
EXIT_INTERRUPTED = 130  # exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it


def add_log_level_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="level of library log messages on stderr (default: WARNING)")


def configure_logging(level: str) -> None:
    """Send library log messages at `level` and above to stderr, with time, level and logger name."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def exit_with_error(error: Exception) -> int:
    """Print `error` as one `error: ...` line on stderr and return the usage-error exit status."""
    print(f"error: {error}", file=sys.stderr)
    return EXIT_USAGE
