"""cluster.yaml against Ray's own cluster-launcher validation (the checks `ray up` runs first)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from ablations.ray_env import TRIAL_DRIVER_RESOURCE

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_ray_validation(config):
    validate_config(prepare_config(copy.deepcopy(config)))


def test_cluster_yaml_has_gpu_workers(config):
    node_types = config["available_node_types"]
    head = node_types[config["head_node_type"]]
    gpu_types = [name for name, spec in node_types.items() if spec["resources"].get("GPU", 0) >= 1]
    assert head["resources"]["GPU"] == 0
    assert gpu_types == ["gpu.worker"]
    assert node_types["gpu.worker"]["max_workers"] >= 1


def test_cluster_yaml_installs_project(config):
    commands = " ".join(config["setup_commands"])
    assert config["file_mounts"] == {"~/ihas": "."}
    assert "pip install --quiet -e ~/ihas" in commands
    assert ".venv" in config["rsync_exclude"]


def test_cluster_yaml_head_settings(config):
    head_start = " ".join(config["head_start_ray_commands"])
    assert f'"{TRIAL_DRIVER_RESOURCE}": 1000' in head_start
    assert "--dashboard-host=127.0.0.1" in head_start


def test_validation_rejects_broken_copy(config):
    # Shows that the validation above can fail: a worker count must be an integer.
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu.worker"]["min_workers"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
