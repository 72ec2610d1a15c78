"""Command line of the ablation runner: `python -m ablations --study NAME_OR_FILE [options]`."""

from __future__ import annotations

import argparse
import sys

from ablations.cli_support import EXIT_INTERRUPTED, add_log_level_option, configure_logging, exit_with_error
from ablations.study import StudyError, available_studies, load_study


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ablations",
        description="Run a study of iHAS variants and baselines as parallel Ray Tune trials and write "
                    "results.parquet, results.csv and table.md.")
    parser.add_argument("--study", required=True,
                        help=f"study name ({', '.join(available_studies())}) or path of a study .toml file")
    parser.add_argument("--data", action="append", metavar="DIR",
                        help="prepared dataset directory; repeat for several. Replaces the study's datasets; "
                             "each is named after its folder")
    parser.add_argument("--seeds", type=int, metavar="N", help="run seeds 0..N-1 instead of the study's seeds")
    parser.add_argument("--output", metavar="DIR", help="output directory (default: results/STUDY)")
    parser.add_argument("--address", metavar="ADDRESS",
                        help="Ray cluster address; default: RAY_ADDRESS, or an embedded local Ray when unset")
    parser.add_argument("--max-retries", type=int, metavar="N",
                        help="times a failing trial is retried before it is recorded as failed "
                             "(default: the study's max_retries)")
    parser.add_argument("--trials-per-run", type=int, metavar="N",
                        help="trials that one Ray Train run executes in turn; 1 gives each trial its own run; "
                             "0 packs them into one run per parallel slot on the embedded local Ray and gives "
                             "each trial its own run on a cluster (default: the study's trials_per_run, else 0)")
    parser.add_argument("--storage-path", metavar="PATH",
                        help="where Ray keeps trial checkpoints; on a multi-node cluster give storage that "
                             "every node reaches (default: OUTPUT/ray)")
    parser.add_argument("--params-from", metavar="BEST_JSON",
                        help="best.json of a finished `python -m tune` run: its lambda, tau, K and bin count "
                             "apply to every iHAS variant of the study (baselines keep their settings)")
    add_log_level_option(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        study = load_study(args.study)
        if args.data:
            study = study.replace_datasets(args.data)
        if args.seeds is not None:
            study = study.replace_seeds(args.seeds)
        if args.max_retries is not None:
            study = study.replace_retries(args.max_retries)
        if args.trials_per_run is not None:
            study = study.replace_trials_per_run(args.trials_per_run)
        if args.params_from:
            from tune.params import apply_params, load_best_params

            study = apply_params(study, load_best_params(args.params_from))
    except StudyError as error:
        return exit_with_error(error)

    # Imported after argument checks: importing Ray takes seconds.
    from ablations import ray_env
    from ablations.driver import InfeasibleResourcesError, run_study
    from ablations.results import ResultsMismatchError

    output = args.output or f"results/{study.name}"
    try:
        outcome = run_study(study, output, address=args.address, storage_path=args.storage_path,
                            echo=lambda line: print(line, flush=True))
    except (FileNotFoundError, ResultsMismatchError, InfeasibleResourcesError) as error:
        return exit_with_error(error)
    finally:
        ray_env.shutdown_ray()
    print()
    print(outcome.table, flush=True)
    print(f"results: {outcome.output_dir}/README.md (lists results.parquet, results.csv, table.md and the figures)",
          flush=True)
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
