"""`python -m ablations`: run a study (methods x datasets x seeds) as parallel Ray Tune trials.

Each trial is one Ray Train run of `ihas.pipeline.run_pipeline`; results go to `results.parquet`,
`results.csv` and `table.md` in the output directory.
"""
