"""Tests of `ihas run`: outputs on real data, config overrides, resume, and the missing-dataset error."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ihas.cli import main as ihas_main

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["--max-epochs", "1", "--pretrain-epochs", "1"]


def run(*args: str) -> int:
    return ihas_main(["--log-level", "WARNING", "run", *args])


def test_run_writes_metrics_config_and_model(prepared_criteo_dir, tmp_path):
    output = tmp_path / "out"
    overrides = tmp_path / "overrides.toml"
    overrides.write_text("[search]\nval_every = 2\ntau = 0.5\n\n[cluster]\nnum_clusters = 3\n")
    code = run("--data", str(prepared_criteo_dir), "--variant", "ihas", "--output", str(output),
               "--seed", "4", "--config", str(overrides), *TINY)
    assert code == 0

    metrics = json.loads((output / "metrics.json").read_text())
    for key in ("test_auc", "test_logloss", "num_params", "inference_seconds", "inference_samples_per_s"):
        assert math.isfinite(metrics[key]), key
    assert metrics["variant"] == "ihas"
    assert metrics["seed"] == 4
    k = metrics["num_clusters"]
    assert k + metrics["num_dropped_clusters"] == 3
    assert sum(metrics[f"cluster_{c}_test_rows"] for c in range(k)) == metrics["test_rows"]

    config = json.loads((output / "config.json").read_text())
    assert config["search"]["tau"] == 0.5
    assert config["search"]["val_every"] == 2
    assert config["train"]["max_epochs"] == 1
    assert config["search"]["pretrain_epochs"] == 1

    state = torch.load(output / "model" / "model.pt", weights_only=True)
    assert state["centroids"].shape[0] == k
    assert json.loads((output / "model" / "model.json").read_text())["num_clusters"] == k
    assert not [p for p in output.rglob("*.tmp")], "temporary files left behind"


def test_rerun_resumes_from_checkpoint(prepared_criteo_dir, tmp_path, caplog):
    output = tmp_path / "out"
    args = ["--data", str(prepared_criteo_dir), "--variant", "base", "--output", str(output), *TINY]
    assert run(*args) == 0
    first = json.loads((output / "metrics.json").read_text())
    assert (output / "checkpoint" / "checkpoint.pt").is_file()
    with caplog.at_level("INFO", logger="ihas.pipeline"):
        assert run(*args) == 0
    assert any("resuming: finished stages ['train']" in r.getMessage() for r in caplog.records)
    second = json.loads((output / "metrics.json").read_text())
    assert second["test_auc"] == first["test_auc"]


def test_missing_dataset_is_one_line_error(tmp_path):
    missing = tmp_path / "nowhere"
    result = subprocess.run([sys.executable, "-m", "ihas.cli", "run", "--data", str(missing), "--variant", "base",
                             "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(missing) in lines[0]
    assert "ihas prepare" in lines[0]
    assert not (tmp_path / "out").exists()


def test_invalid_override_is_rejected(prepared_criteo_dir, tmp_path, capsys):
    overrides = tmp_path / "bad.json"
    overrides.write_text(json.dumps({"search": {"tau": -1}}))
    code = run("--data", str(prepared_criteo_dir), "--variant", "ihas", "--output", str(tmp_path / "out"),
               "--config", str(overrides))
    assert code == 2
    assert "tau must be > 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting, message", [
    ({"search": {"tau": "x"}}, "config setting search.tau must be a number, got 'x'"),
    ({"train": {"max_epochs": 2.5}}, "config setting train.max_epochs must be an integer, got 2.5"),
    ({"search": {"gate": "both"}}, "config setting search.gate must be one of ['instance', 'agnostic']"),
    ({"model": {"mlp_dims": [16, "a"]}}, "config setting model.mlp_dims must be a list of integers"),
])
def test_wrong_type_setting_is_named(prepared_criteo_dir, tmp_path, capsys, setting, message):
    overrides = tmp_path / "bad.json"
    overrides.write_text(json.dumps(setting))
    code = run("--data", str(prepared_criteo_dir), "--variant", "ihas", "--output", str(tmp_path / "out"),
               "--config", str(overrides))
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cuda_without_gpu_is_rejected(prepared_criteo_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        code = run("--data", str(prepared_criteo_dir), "--variant", "base", "--output", str(tmp_path / "out"),
                   "--device", "cuda", *TINY)
        assert code == 0
        return
    code = run("--data", str(prepared_criteo_dir), "--variant", "base", "--output", str(tmp_path / "out"),
               "--device", "cuda", *TINY)
    assert code == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err
