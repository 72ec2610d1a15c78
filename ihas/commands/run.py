"""`ihas run`: one variant end to end on a prepared dataset, writing metrics, config and the model."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tomllib
from pathlib import Path
from typing import Any

from ihas.atomic import atomic_write_text
from ihas.config import PipelineConfig, override
from ihas.data.dataset import METADATA_FILE, load_prepared
from ihas.reporting import LocalReporter
from ihas.variants import VARIANTS

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
MODEL_DIR = "model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="prepared dataset directory (from `ihas prepare`)")
    parser.add_argument("--variant", required=True, choices=list(VARIANTS), help="ablation variant to run")
    parser.add_argument("--output", required=True, type=Path,
                        help="directory for metrics.json, config.json, model/ and the resumable checkpoint")
    parser.add_argument("--seed", type=int, default=None, help="seed of initialisation, batch order and noise (default 0)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="device to train on (default cpu)")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="cap on the epochs of every training stage (training, search, retraining)")
    parser.add_argument("--pretrain-epochs", type=int, default=None,
                        help="epochs of pretraining with open gates before the search (default 5)")
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML or JSON file of config overrides, e.g. [search] tau = 0.5")


def build_config(args: argparse.Namespace) -> PipelineConfig:
    """Merge defaults, the --config file and the flags (flags win) into a validated config."""
    overrides: dict[str, Any] = {}
    if args.config is not None:
        overrides = _read_overrides(args.config)
    config = override(PipelineConfig(), overrides)
    flags: dict[str, Any] = {"variant": args.variant}
    if args.seed is not None:
        flags["seed"] = args.seed
    if args.device is not None:
        flags["device"] = args.device
    if args.max_epochs is not None:
        flags["train"] = {"max_epochs": args.max_epochs}
        flags["search"] = {"max_epochs": args.max_epochs}
    if args.pretrain_epochs is not None:
        flags.setdefault("search", {})["pretrain_epochs"] = args.pretrain_epochs
    return override(config, flags)


def _read_overrides(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"config file {path} not found")
    text = path.read_text()
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix == ".json":
        return json.loads(text)
    raise ValueError(f"config file {path} must end in .toml or .json")


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to `path` through a temporary file in the same directory, so readers never see half a file."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n"
    atomic_write_text(path, text)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _finite_or_null(metrics: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN; an undefined figure (for example the AUC of a one-class cluster) becomes null.
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def main(args: argparse.Namespace) -> int:
    data_dir: Path = args.data
    if not (data_dir / METADATA_FILE).is_file():
        print(f"ihas run: error: {data_dir} is not a prepared dataset (no {METADATA_FILE}); create it with "
              f"`ihas prepare --preset NAME --input FILE --output {data_dir}`", file=sys.stderr)
        return 2
    try:
        config = build_config(args)
    except (ValueError, tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        print(f"ihas run: error: invalid configuration: {error}", file=sys.stderr)
        return 2

    from ihas.pipeline import run_pipeline  # deferred: torch-heavy, and `--help` should stay quick

    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    data = load_prepared(data_dir)
    write_json_atomic(output / "config.json", config.to_dict())
    reporter = LocalReporter(output / CHECKPOINT_DIR)
    try:
        metrics = run_pipeline(config, data, reporter=reporter, output_dir=output / MODEL_DIR)
    except ValueError as error:
        logger.debug("run failed", exc_info=True)
        print(f"ihas run: error: {error}", file=sys.stderr)
        return 2
    write_json_atomic(output / "metrics.json", _finite_or_null(metrics))
    print(f"ihas run: {config.variant}: test AUC {metrics['test_auc']:.6f}, test logloss "
          f"{metrics['test_logloss']:.6f}, {metrics['num_params']} parameters; wrote {output / 'metrics.json'}")
    return 0
