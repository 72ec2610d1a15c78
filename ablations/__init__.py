"""`python -m ablations`: run a study (methods x datasets x seeds) on Ray Tune and Ray Train.

Each trial is one call of `ihas.pipeline.run_pipeline`. The trials are packed into a few Ray Train
runs, each one Tune trial, that run in parallel; results go to `results.parquet`, `results.csv` and
`table.md` in the output directory.
"""
