"""Study files: loading, merging of overrides, and the errors a bad study gets. No Ray here."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablations.study import StudyError, load_study

# Table 4 of the iHAS paper (CIKM 2023): test AUC on Avazu.
PAPER_TABLE4_AUC = {"base": 0.7765, "ihas-1": 0.7772, "ihas-2": 0.7767, "ihas-3": 0.7801, "ihas-4": 0.7768,
                    "ihas": 0.7815}

MINIMAL = """
name = "tiny"
version = 2
methods = ["base", "ihas"]
seeds = [3, 4]
[datasets.sample]
path = "some/dir"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_paper_table4_lists_ablation_variants():
    study = load_study("paper-table4")
    assert study.name == "paper-table4"
    assert study.methods == ("base", "ihas-1", "ihas-2", "ihas-3", "ihas-4", "ihas")
    assert [d.name for d in study.datasets] == ["movielens-100k"]
    assert study.datasets[0].preset == "movielens-100k"
    assert study.resources.num_workers == 1
    assert study.resources.use_gpu is False


def test_paper_table4_reference_matches_paper():
    study = load_study("paper-table4")
    assert study.reference.dataset == "Avazu"
    assert dict(study.reference.auc) == PAPER_TABLE4_AUC


def test_study_loads_by_path(tmp_path):
    study = load_study(write(tmp_path, MINIMAL))
    assert study.name == "tiny"
    assert study.version == 2
    assert study.seeds == (3, 4)
    assert study.datasets[0].path == "some/dir"
    assert study.max_retries == 1
    assert study.max_concurrent_trials == 0


def test_overrides_merge_in_order(tmp_path):
    text = MINIMAL + """
[overrides.train]
max_epochs = 3
lr = 0.01
[method_overrides.ihas.train]
max_epochs = 5
[method_overrides.ihas.search]
tau = 0.5
"""
    study = load_study(write(tmp_path, text))
    base = study.pipeline_config("base", 3)
    full = study.pipeline_config("ihas", 4, extra={"search": {"bins": 10}})
    assert base.variant == "base"
    assert base.seed == 3
    assert base.train.max_epochs == 3
    assert base.train.lr == 0.01
    assert base.search.tau == 0.1
    assert full.variant == "ihas"
    assert full.seed == 4
    assert full.train.max_epochs == 5
    assert full.train.lr == 0.01
    assert full.search.tau == 0.5
    assert full.search.bins == 10


def test_command_line_replacements(tmp_path):
    study = load_study(write(tmp_path, MINIMAL))
    replaced = study.replace_datasets([str(tmp_path / "a" / "criteo-10k"), "x/avazu"])
    assert [d.name for d in replaced.datasets] == ["criteo-10k", "avazu"]
    assert replaced.datasets[1].path == "x/avazu"
    assert study.replace_seeds(3).seeds == (0, 1, 2)
    assert study.replace_retries(0).max_retries == 0
    assert study.trials_per_run == 0
    assert study.replace_trials_per_run(1).trials_per_run == 1


@pytest.mark.parametrize("extra, message", [
    ('colour = "red"\n', "unknown study key(s) ['colour']"),
    ('[overrides.train]\nmax_epoch = 3\n', "max_epoch"),
    ('[overrides.train]\nmax_epochs = 0\n', "max_epochs must be >= 1"),
    ('[method_overrides.ihas-2.train]\nlr = 0.1\n', "not in methods"),
    ('[resources]\nnum_workers = 0\n', "num_workers must be >= 1"),
    ('[resources]\nuse_gpu = "yes"\n', "use_gpu must be true or false"),
    ('[resources]\ngpu = 1\n', "unknown key(s) ['gpu'] in [resources]"),
    ('max_retries = -1\n', "max_retries must be >= 0"),
    ('trials_per_run = -1\n', "trials_per_run must be >= 0"),
    ('trials_per_run = 1.5\n', "trials_per_run must be an integer"),
    ('min_report_interval_s = -2\n', "min_report_interval_s must be >= 0"),
    ('min_report_interval_s = "often"\n', "min_report_interval_s must be a number"),
    ('[reference.auc]\nbase = "high"\n', "reference.auc must map method names to numbers"),
])
def test_invalid_study_rejected(tmp_path, extra, message):
    # New top-level keys go before the first table; tables go at the end.
    text = extra + MINIMAL if not extra.startswith("[") else MINIMAL + extra
    with pytest.raises(StudyError) as caught:
        load_study(write(tmp_path, text))
    assert message in str(caught.value)


@pytest.mark.parametrize("replace, by, message", [
    ('methods = ["base", "ihas"]', 'methods = ["base", "ihas-9"]', "unknown method(s) ['ihas-9']"),
    ('methods = ["base", "ihas"]', 'methods = ["base", "base"]', "lists a method twice"),
    ('methods = ["base", "ihas"]', "methods = []", "lists no methods"),
    ("seeds = [3, 4]", "seeds = [3, 3]", "lists a seed twice"),
    ("seeds = [3, 4]", 'seeds = ["a"]', "seeds must be a list of integers"),
    ('path = "some/dir"', 'preset = "criteo"', "needs path"),
    ('version = 2', 'version = 0', "version must be >= 1"),
])
def test_invalid_field_rejected(tmp_path, replace, by, message):
    with pytest.raises(StudyError) as caught:
        load_study(write(tmp_path, MINIMAL.replace(replace, by)))
    assert message in str(caught.value)


def test_missing_datasets_rejected(tmp_path):
    text = MINIMAL.replace('[datasets.sample]\npath = "some/dir"\n', "")
    with pytest.raises(StudyError, match="lists no datasets"):
        load_study(write(tmp_path, text))


def test_unknown_study_name_lists_known():
    with pytest.raises(StudyError) as caught:
        load_study("paper-table-99")
    assert "unknown study 'paper-table-99'" in str(caught.value)
    assert "paper-table4" in str(caught.value)


def test_missing_study_file_rejected(tmp_path):
    with pytest.raises(StudyError, match="not found"):
        load_study(tmp_path / "absent.toml")


def test_invalid_toml_rejected(tmp_path):
    with pytest.raises(StudyError, match="not valid TOML"):
        load_study(write(tmp_path, "name = \n"))
