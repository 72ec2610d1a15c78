"""Tuning studies: named TOML files that configure one hyperparameter search.

A tuning study names one dataset and the iHAS variant to tune. It sets the search budget
(`num_samples` trials, at most `max_concurrent_trials` at once) and the resources of one trial,
fractional GPUs included. It also sets the sampler seed, the ASHA settings, the search ranges,
pipeline overrides (epoch caps and the like) and the seeds of the fresh runs with the best config. Named studies live in
`tune/studies/NAME.toml`; any other TOML file can be given by path. The dataset and resources
tables have the same keys as in ablation studies.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ablations.study import DatasetSpec, Resources, StudyError, parse_dataset, parse_resources, read_study_file
from ihas.config import PipelineConfig, override
from tune.space import DEFAULT_RANGES, SearchRanges, to_overrides

STUDIES_DIR = Path(__file__).resolve().parent / "studies"

# Variants whose every stage uses the four searched values. `ihas-1` and `ihas-2` never cluster,
# so K would be a dead parameter for them.
TUNABLE_METHODS = ("ihas", "ihas-3", "ihas-4")

_TOP_LEVEL_KEYS = {"name", "version", "description", "method", "datasets", "num_samples",
                   "max_concurrent_trials", "max_retries", "sampler_seed", "startup_trials", "seed",
                   "final_seeds", "resources", "asha", "space", "overrides"}


class TuneStudyError(StudyError):
    """A tuning study file is missing, malformed or names an invalid setting."""


@dataclass(frozen=True)
class AshaSettings:
    """ASHA over search-stage epochs. `max_t` 0 means the pipeline's `search.max_epochs`."""

    grace_period: int = 1  # search epochs every trial runs before ASHA may stop it
    reduction_factor: float = 2.0  # 1/reduction_factor of the trials at a rung go on to the next
    max_t: int = 0

    def __post_init__(self) -> None:
        _check(self.grace_period >= 1, f"asha.grace_period must be >= 1, got {self.grace_period}")
        _check(self.reduction_factor > 1, f"asha.reduction_factor must be > 1, got {self.reduction_factor}")
        _check(self.max_t >= 0, f"asha.max_t must be >= 0 (0: search.max_epochs), got {self.max_t}")


@dataclass(frozen=True)
class TuneStudy:
    """One hyperparameter search: `num_samples` trials of `method` on `dataset`."""

    name: str
    version: int
    description: str
    dataset: DatasetSpec
    method: str = "ihas"
    num_samples: int = 20
    max_concurrent_trials: int = 0  # 0: as many as the cluster's resources allow
    max_retries: int = 0  # Tune retries of a trial that raised; a retried trial resumes its checkpoint
    sampler_seed: int = 0  # seed of Optuna's TPE sampler
    startup_trials: int = 10  # random trials before TPE starts to model the results
    seed: int = 0  # pipeline seed of every search trial
    final_seeds: tuple[int, ...] = (0, 1, 2)  # seeds of the fresh runs with the best config
    resources: Resources = field(default_factory=Resources)
    asha: AshaSettings = field(default_factory=AshaSettings)
    space: SearchRanges = DEFAULT_RANGES
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(bool(self.name), "study name must not be empty")
        _check(self.version >= 1, f"study version must be >= 1, got {self.version}")
        _check(self.method in TUNABLE_METHODS,
               f"method {self.method!r} cannot be tuned here; use one of {list(TUNABLE_METHODS)}")
        _check(self.num_samples >= 1, f"num_samples must be >= 1, got {self.num_samples}")
        _check(self.max_concurrent_trials >= 0,
               f"max_concurrent_trials must be >= 0 (0 means no limit), got {self.max_concurrent_trials}")
        _check(self.max_retries >= 0, f"max_retries must be >= 0, got {self.max_retries}")
        _check(self.startup_trials >= 1, f"startup_trials must be >= 1, got {self.startup_trials}")
        _check(len(self.final_seeds) >= 1, "final_seeds must list at least one seed, e.g. final_seeds = [0, 1, 2]")
        _check(len(set(self.final_seeds)) == len(self.final_seeds),
               f"final_seeds lists a seed twice: {list(self.final_seeds)}")
        try:
            config = self.pipeline_config(self.seed)
        except ValueError as error:
            raise TuneStudyError(f"study {self.name!r}: invalid overrides: {error}") from error
        for name in ("reg_lambda", "tau", "bins"):
            _check(name not in self.overrides.get("search", {}),
                   f"overrides.search.{name} is searched by this study; set its range under [space] instead")
        _check("num_clusters" not in self.overrides.get("cluster", {}),
               "overrides.cluster.num_clusters is searched by this study; set its range under [space] instead")
        _check(self.scheduler_max_t(config) >= self.asha.grace_period,
               f"asha.grace_period ({self.asha.grace_period}) exceeds the search epochs "
               f"({self.scheduler_max_t(config)}); lower it or raise search.max_epochs")

    def pipeline_config(self, seed: int, params: Mapping[str, Any] | None = None) -> PipelineConfig:
        """Config of one run: defaults, the study's overrides, then the searched values in `params`."""
        config = override(PipelineConfig(variant=self.method, seed=seed), self.overrides)
        if params:
            config = override(config, to_overrides(params))
        return config.replace(variant=self.method, seed=seed)

    def scheduler_max_t(self, config: PipelineConfig | None = None) -> int:
        config = config or self.pipeline_config(self.seed)
        return self.asha.max_t or config.search.max_epochs

    def replace(self, **changes: Any) -> "TuneStudy":
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict[str, Any]:
        """What must match for a rerun to continue the study in an output directory (not num_samples)."""
        return {"name": self.name, "version": self.version, "method": self.method,
                "dataset_path": str(Path(self.dataset.path).resolve()), "seed": self.seed,
                "sampler_seed": self.sampler_seed, "startup_trials": self.startup_trials,
                "space": dataclasses.asdict(self.space), "asha": dataclasses.asdict(self.asha),
                "overrides": json.loads(json.dumps(self.overrides, sort_keys=True))}

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str))


def load_tune_study(name_or_file: str | Path) -> TuneStudy:
    """Load a tuning study by name (a file in `tune/studies/`) or by the path of a TOML file."""
    return read_study_file(name_or_file, STUDIES_DIR, tune_study_from_dict, TuneStudyError, "tuning study")


def available_tune_studies() -> list[str]:
    """Names of the tuning studies shipped in `tune/studies/`."""
    return sorted(p.stem for p in STUDIES_DIR.glob("*.toml"))


def tune_study_from_dict(raw: Mapping[str, Any], default_name: str = "") -> TuneStudy:
    """Validate the parsed TOML of a tuning study and build the `TuneStudy`."""
    unknown = sorted(set(raw) - _TOP_LEVEL_KEYS)
    _check(not unknown, f"unknown tuning study key(s) {unknown}; known keys: {sorted(_TOP_LEVEL_KEYS)}")
    datasets = raw.get("datasets", {})
    _check(isinstance(datasets, Mapping) and len(datasets) == 1,
           f"a tuning study needs exactly one [datasets.NAME] table, got {len(datasets) if isinstance(datasets, Mapping) else datasets!r}")
    (dataset_name, dataset_spec), = datasets.items()
    for key in ("resources", "asha", "space", "overrides"):
        _check(isinstance(raw.get(key, {}), Mapping), f"{key} must be a table")
    asha = dict(raw.get("asha", {}))
    asha_known = {f.name for f in dataclasses.fields(AshaSettings)}
    _check(not set(asha) - asha_known,
           f"unknown key(s) {sorted(set(asha) - asha_known)} in [asha]; known keys: {sorted(asha_known)}")
    final_seeds = raw.get("final_seeds", [0, 1, 2])
    _check(isinstance(final_seeds, list) and all(_is_int(s) for s in final_seeds),
           f"final_seeds must be a list of integers, got {final_seeds!r}")
    method = raw.get("method", "ihas")
    _check(isinstance(method, str), f"method must be a string, got {method!r}")
    return TuneStudy(
        name=str(raw.get("name", default_name)),
        version=_int(raw, "version", 1),
        description=str(raw.get("description", "")),
        dataset=parse_dataset(dataset_name, dataset_spec),
        method=method,
        num_samples=_int(raw, "num_samples", 20),
        max_concurrent_trials=_int(raw, "max_concurrent_trials", 0),
        max_retries=_int(raw, "max_retries", 0),
        sampler_seed=_int(raw, "sampler_seed", 0),
        startup_trials=_int(raw, "startup_trials", 10),
        seed=_int(raw, "seed", 0),
        final_seeds=tuple(final_seeds),
        resources=parse_resources(raw.get("resources", {})),
        asha=AshaSettings(**asha),
        space=SearchRanges.from_dict(raw.get("space", {})),
        overrides=dict(raw.get("overrides", {})),
    )


def _int(raw: Mapping[str, Any], name: str, default: int) -> int:
    value = raw.get(name, default)
    _check(_is_int(value), f"{name} must be an integer, got {value!r}")
    return int(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise TuneStudyError(message)
