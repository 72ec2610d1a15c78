"""`python -m tune`: hyperparameter search of iHAS over lambda, tau, K and the histogram bin count.

Ray Tune runs the trials (each one full pipeline run, as the ablation runner runs it), Optuna's
TPE sampler proposes the values, and ASHA stops weak trials on the search stage's per-epoch
validation AUC. The Optuna study is kept in SQLite in the output directory.
"""
