"""Command line of the tuning runner: `python -m tune --study NAME_OR_FILE [options]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ablations.cli_support import add_log_level_option, configure_logging, exit_with_error
from tune.study import TuneStudyError, available_tune_studies, load_tune_study


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tune",
        description="Search iHAS's lambda, tau, K and histogram bin count with Ray Tune and Optuna (TPE), "
                    "maximizing validation AUC; then write best.json, run the best config over the "
                    "study's final seeds, and write importance.json and history.png.")
    parser.add_argument("--study", required=True,
                        help=f"tuning study name ({', '.join(available_tune_studies())}) or path of a .toml file")
    parser.add_argument("--data", metavar="DIR",
                        help="prepared dataset directory; replaces the study's dataset, named after its folder")
    parser.add_argument("--num-samples", type=int, metavar="N",
                        help="total number of trials of the study, counting those already run in OUTPUT "
                             "(default: the study's num_samples)")
    parser.add_argument("--output", metavar="DIR", help="output directory (default: results/tune-STUDY)")
    parser.add_argument("--address", metavar="ADDRESS",
                        help="Ray cluster address; default: RAY_ADDRESS, or an embedded local Ray when unset")
    parser.add_argument("--skip-final", action="store_true",
                        help="do not run the best config over the final seeds (best.json has no test metrics)")
    add_log_level_option(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        study = load_tune_study(args.study)
        if args.data:
            from ablations.study import DatasetSpec

            study = study.replace(dataset=DatasetSpec(name=Path(args.data).resolve().name, path=args.data))
        if args.num_samples is not None:
            study = study.replace(num_samples=args.num_samples)
    except TuneStudyError as error:
        return exit_with_error(error)

    # Imported after argument checks: importing Ray takes seconds.
    from ablations import ray_env
    from ablations.driver import InfeasibleResourcesError
    from ablations.results import ResultsMismatchError
    from tune.driver import run_tuning

    output = args.output or f"results/tune-{study.name}"
    try:
        outcome = run_tuning(study, output, address=args.address, run_final=not args.skip_final,
                             echo=lambda line: print(line, flush=True))
    except (FileNotFoundError, TuneStudyError, ResultsMismatchError, InfeasibleResourcesError) as error:
        return exit_with_error(error)
    finally:
        ray_env.shutdown_ray()
    if not outcome.complete:
        return 1
    print(f"results: {outcome.output_dir}/best.json, trials.csv, importance.json, history.png, optuna.db",
          flush=True)
    return 0 if outcome.best is not None else 1


if __name__ == "__main__":
    sys.exit(main())
