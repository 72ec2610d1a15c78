"""Shared fixtures: paths to the real sample data kept beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real sample data not found at {SHARED_DATA}; the repository expects ../shared/data beside it")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that needs it: 2 CPUs, dashboard on, bound to 127.0.0.1.

    Started through the ablation runner's own setup, so tests exercise the settings users get.
    Imported lazily, so that test files without Ray do not pay for importing it.
    """
    from ablations import ray_env

    ray_env.init_ray(num_cpus=2)
    yield
    ray_env.shutdown_ray()


def _prepare(tmp_path_factory: pytest.TempPathFactory, name: str, preset: str, source: Path) -> Path:
    from ihas.cli import main as ihas_main

    output = tmp_path_factory.mktemp("prepared") / name
    code = ihas_main(["--log-level", "WARNING", "prepare", "--preset", preset, "--input", str(source),
                      "--output", str(output)])
    if code != 0:
        pytest.fail(f"`ihas prepare --preset {preset}` failed with exit code {code}")
    return output


@pytest.fixture(scope="session")
def prepared_criteo_dir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Criteo 10k sample, prepared once per test session by `ihas prepare`."""
    return _prepare(tmp_path_factory, "criteo-10k", "criteo", shared_data / "criteo-1tb-day0-10k" / "day_0.part.txt")


@pytest.fixture(scope="session")
def prepared_movielens_dir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MovieLens-100K, prepared once per test session by `ihas prepare`."""
    return _prepare(tmp_path_factory, "movielens-100k", "movielens-100k", shared_data / "movielens-100k")


@pytest.fixture(scope="session")
def criteo_data(prepared_criteo_dir: Path):
    from ihas.data.dataset import load_prepared

    return load_prepared(prepared_criteo_dir)


@pytest.fixture(scope="session")
def movielens_data(prepared_movielens_dir: Path):
    from ihas.data.dataset import load_prepared

    return load_prepared(prepared_movielens_dir)


@pytest.fixture(scope="session")
def criteo_10k_prepared(shared_data, tmp_path_factory) -> Path:
    """The Criteo 10k sample, prepared once per test session with `ihas prepare`'s own code."""
    from ihas.data.prepare import prepare
    from ihas.data.reader import open_source
    from ihas.data.schema import preset

    output = tmp_path_factory.mktemp("prepared") / "criteo-10k"
    source = open_source(preset("criteo"), shared_data / "criteo-1tb-day0-10k" / "day_0.part.txt")
    prepare(source, output)
    return output


# Epoch caps that keep each trial of the transfer study below to seconds.
TINY_TRANSFER_CAPS = {"train": {"max_epochs": 1}, "search": {"pretrain_epochs": 1, "max_epochs": 1, "val_every": 2},
                      "baseline": {"adafs-soft": {"pretrain_epochs": 1}}}


@pytest.fixture(scope="session")
def transfer_study_run(ray_session, criteo_10k_prepared, tmp_path_factory):
    """FM's three transfer rows and iHAS-3 on Criteo 10k through the ablation driver, run once per session.

    Shared by the transfer tests (rows and Table 3) and the figure tests (PNGs and README), so the
    Ray trials run once. Returns (StudyOutcome, the driver's progress lines).
    """
    from ablations.driver import run_study
    from ablations.study import study_from_dict

    study = study_from_dict({
        "name": "tiny-table3", "methods": ["fm", "adafs-soft-fm", "ihas-fm", "ihas-3"], "seeds": [0],
        "max_retries": 0, "datasets": {"criteo-10k": {"path": str(criteo_10k_prepared)}},
        "overrides": TINY_TRANSFER_CAPS})
    lines: list[str] = []
    outcome = run_study(study, tmp_path_factory.mktemp("table3") / "out", echo=lines.append)
    return outcome, lines
