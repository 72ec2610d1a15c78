"""Studies: named, versioned TOML files that list the trials of one experiment.

A study names its datasets, methods (pipeline variants or registered baselines), seeds, the
resources of one trial, retry and concurrency limits, pipeline overrides for every method and per
method, and the published figures that the results table prints beside the measured ones. Named
studies live in `ablations/studies/NAME.toml`; any other TOML file can be given by path.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from ihas.config import PipelineConfig, override

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib
    import tomli as tomllib

STUDIES_DIR = Path(__file__).resolve().parent / "studies"
T = TypeVar("T")

_TOP_LEVEL_KEYS = {"name", "version", "description", "datasets", "methods", "seeds", "resources",
                   "max_concurrent_trials", "max_retries", "trials_per_run", "min_report_interval_s", "overrides", "method_overrides", "reference"}


class StudyError(ValueError):
    """A study file is missing, malformed or names an invalid setting."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where one dataset of a study lives and, optionally, how to prepare it when it is missing.

    `path` is a directory written by `ihas prepare`. When `preset` is set and `path` contains no
    prepared dataset, the driver runs `ihas prepare --preset PRESET [--input INPUT] --output PATH`.
    """

    name: str
    path: str
    preset: str | None = None
    input: str | None = None


@dataclass(frozen=True)
class Resources:
    """Resources of one trial: Ray Train workers, their CPUs and GPUs, and the trial driver's CPUs."""

    num_workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    gpus_per_worker: float = 1.0  # used only when use_gpu is true
    driver_cpus: float = 0.01  # the Tune function that starts the Train run mostly waits

    def __post_init__(self) -> None:
        _check(self.num_workers >= 1, f"resources.num_workers must be >= 1, got {self.num_workers}")
        _check(self.cpus_per_worker > 0, f"resources.cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        _check(self.gpus_per_worker > 0, f"resources.gpus_per_worker must be > 0, got {self.gpus_per_worker}")
        _check(self.driver_cpus > 0,
               f"resources.driver_cpus must be > 0 (Ray Tune rejects a trial without resources), got {self.driver_cpus}")


@dataclass(frozen=True)
class Reference:
    """Published figures printed beside the measured ones.

    `auc` is the test AUC per method on the one dataset `dataset`. `datasets` contains the figures
    of several datasets, keyed dataset name -> metric ("auc" or "logloss") -> method -> value.
    """

    dataset: str = ""
    source: str = ""
    auc: Mapping[str, float] = field(default_factory=dict)
    datasets: Mapping[str, Mapping[str, Mapping[str, float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """One experiment: every (method, dataset, seed) combination is one trial."""

    name: str
    version: int
    description: str
    datasets: tuple[DatasetSpec, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    resources: Resources = field(default_factory=Resources)
    max_concurrent_trials: int = 0  # 0: as many as the cluster's resources allow
    max_retries: int = 1
    trials_per_run: int = 0  # trials per Ray Train run; 0: chosen by where the study runs (see ablations.grouping)
    min_report_interval_s: float = 5.0  # fold per-epoch reports that come sooner (see ablations.reporter)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    method_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reference: Reference = field(default_factory=Reference)

    def __post_init__(self) -> None:
        _check(bool(self.name), "study name must not be empty")
        _check(self.version >= 1, f"study version must be >= 1, got {self.version}")
        _check(len(self.datasets) >= 1, f"study {self.name!r} lists no datasets; add a [datasets.NAME] table")
        _check(len(self.methods) >= 1, f"study {self.name!r} lists no methods; set methods = [...]")
        _check(len(set(self.methods)) == len(self.methods), f"study {self.name!r} lists a method twice: {list(self.methods)}")
        _check(len(self.seeds) >= 1, f"study {self.name!r} lists no seeds; set seeds = [0, ...]")
        _check(len(set(self.seeds)) == len(self.seeds), f"study {self.name!r} lists a seed twice: {list(self.seeds)}")
        names = [d.name for d in self.datasets]
        _check(len(set(names)) == len(names), f"study {self.name!r} lists a dataset twice: {names}")
        _check(self.max_concurrent_trials >= 0,
               f"max_concurrent_trials must be >= 0 (0 means no limit), got {self.max_concurrent_trials}")
        _check(self.max_retries >= 0, f"max_retries must be >= 0, got {self.max_retries}")
        _check(self.min_report_interval_s >= 0,
               f"min_report_interval_s must be >= 0 (0 reports every epoch), got {self.min_report_interval_s}")
        _check(self.trials_per_run >= 0, f"trials_per_run must be >= 0 (0 chooses by where the study runs), "
                                          f"got {self.trials_per_run}")
        unknown = sorted(set(self.method_overrides) - set(self.methods))
        _check(not unknown, f"method_overrides names method(s) {unknown} that are not in methods {list(self.methods)}")
        known = known_methods()
        unknown_methods = [m for m in self.methods if m not in known]
        _check(not unknown_methods, f"study {self.name!r} names unknown method(s) {unknown_methods}; "
                                    f"known methods: {sorted(known)}")
        for method in self.methods:
            # Build every method's config once so that a bad override fails here, before Ray starts.
            try:
                self.pipeline_config(method, self.seeds[0])
            except ValueError as error:
                raise StudyError(f"study {self.name!r}, method {method!r}: {error}") from error

    def pipeline_config(self, method: str, seed: int, extra: Mapping[str, Any] | None = None) -> PipelineConfig:
        """Build the config of one trial: defaults, study overrides, method overrides, then `extra`."""
        config = PipelineConfig(variant=method, seed=seed)
        config = override(config, self.overrides)
        config = override(config, self.method_overrides.get(method, {}))
        if extra:
            config = override(config, extra)
        return config.replace(variant=method, seed=seed)

    def replace_datasets(self, paths: list[str]) -> "Study":
        """Return a copy whose datasets are the given prepared directories, named after their folders."""
        specs = tuple(DatasetSpec(name=Path(p).resolve().name, path=str(p)) for p in paths)
        return _replace(self, datasets=specs)

    def replace_retries(self, count: int) -> "Study":
        """Return a copy that retries a failing trial `count` times."""
        _check(count >= 0, f"--max-retries must be >= 0, got {count}")
        return _replace(self, max_retries=count)

    def replace_trials_per_run(self, count: int) -> "Study":
        """Return a copy that packs at most `count` trials into one Ray Train run (0: chosen by where it runs)."""
        _check(count >= 0, f"--trials-per-run must be >= 0, got {count}")
        return _replace(self, trials_per_run=count)

    def replace_seeds(self, count: int) -> "Study":
        """Return a copy that runs seeds 0..count-1."""
        _check(count >= 1, f"--seeds must be >= 1, got {count}")
        return _replace(self, seeds=tuple(range(count)))


def known_methods() -> set[str]:
    """Names that `run_pipeline` accepts as `config.variant`: the iHAS variants and registered baselines."""
    import ihas.baselines  # noqa: F401  (baselines register their names on import)
    import ihas.pipeline  # noqa: F401  (registers the iHAS variants)
    import ihas.transfer  # noqa: F401  (registers the transfer methods of each backbone)
    from ihas.variants import METHODS

    return set(METHODS)


def load_study(name_or_file: str | Path) -> Study:
    """Load a study by name (a file in `ablations/studies/`) or by the path of a TOML file."""
    return read_study_file(name_or_file, STUDIES_DIR, study_from_dict, StudyError, "study")


def read_study_file(name_or_file: str | Path, studies_dir: Path, build: Callable[[Mapping[str, Any], str], T],
                    error_type: type[Exception], kind: str) -> T:
    """Find a study file by name in `studies_dir` or by path, parse its TOML and return `build(raw, stem)`.

    Every failure raises `error_type` with a message that names the file and calls it a `kind`.
    """
    path = _resolve(name_or_file, studies_dir, error_type, kind)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise error_type(f"{kind} file {path} is not valid TOML: {error}") from error
    try:
        return build(raw, path.stem)
    except error_type:
        raise
    except (ValueError, TypeError) as error:
        raise error_type(f"{kind} file {path}: {error}") from error


def available_studies() -> list[str]:
    """Names of the studies shipped in `ablations/studies/`."""
    return sorted(p.stem for p in STUDIES_DIR.glob("*.toml"))


def study_from_dict(raw: Mapping[str, Any], default_name: str = "") -> Study:
    """Validate the parsed TOML of a study and build the `Study`."""
    unknown = sorted(set(raw) - _TOP_LEVEL_KEYS)
    _check(not unknown, f"unknown study key(s) {unknown}; known keys: {sorted(_TOP_LEVEL_KEYS)}")
    datasets = raw.get("datasets", {})
    _check(isinstance(datasets, Mapping), "datasets must be a table of [datasets.NAME] tables")
    resources = raw.get("resources", {})
    _check(isinstance(resources, Mapping), "resources must be a table")
    methods = raw.get("methods", [])
    _check(isinstance(methods, list) and all(isinstance(m, str) for m in methods),
           f"methods must be a list of names, got {methods!r}")
    seeds = raw.get("seeds", [0])
    _check(isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds),
           f"seeds must be a list of integers, got {seeds!r}")
    method_overrides = raw.get("method_overrides", {})
    _check(isinstance(method_overrides, Mapping) and all(isinstance(v, Mapping) for v in method_overrides.values()),
           "method_overrides must be a table of [method_overrides.METHOD] tables")
    overrides = raw.get("overrides", {})
    _check(isinstance(overrides, Mapping), "overrides must be a table of pipeline settings")
    return Study(
        name=str(raw.get("name", default_name)),
        version=_int(raw.get("version", 1), "version"),
        description=str(raw.get("description", "")),
        datasets=tuple(parse_dataset(name, spec) for name, spec in datasets.items()),
        methods=tuple(methods),
        seeds=tuple(seeds),
        resources=parse_resources(resources),
        max_concurrent_trials=_int(raw.get("max_concurrent_trials", 0), "max_concurrent_trials"),
        max_retries=_int(raw.get("max_retries", 1), "max_retries"),
        trials_per_run=_int(raw.get("trials_per_run", 0), "trials_per_run"),
        min_report_interval_s=_number(raw.get("min_report_interval_s", 5.0), "min_report_interval_s"),
        overrides=dict(overrides),
        method_overrides={k: dict(v) for k, v in method_overrides.items()},
        reference=_reference(raw.get("reference", {})),
    )


def _resolve(name_or_file: str | Path, studies_dir: Path, error_type: type[Exception], kind: str) -> Path:
    candidate = Path(name_or_file)
    if candidate.suffix == ".toml" or candidate.is_file():
        if not candidate.is_file():
            raise error_type(f"{kind} file {candidate} not found")
        return candidate
    named = studies_dir / f"{name_or_file}.toml"
    if not named.is_file():
        names = sorted(p.stem for p in studies_dir.glob("*.toml"))
        raise error_type(f"unknown {kind} {str(name_or_file)!r}; use one of {names} or the path of a .toml {kind} file")
    return named


def parse_dataset(name: str, spec: Any) -> DatasetSpec:
    _check(isinstance(spec, Mapping), f"[datasets.{name}] must be a table with a path")
    unknown = sorted(set(spec) - {"path", "preset", "input"})
    _check(not unknown, f"unknown key(s) {unknown} in [datasets.{name}]; known keys: input, path, preset")
    _check(isinstance(spec.get("path"), str) and spec["path"] != "",
           f"[datasets.{name}] needs path = \"DIR\" (a directory written by `ihas prepare`)")
    return DatasetSpec(name=name, path=spec["path"], preset=spec.get("preset"), input=spec.get("input"))


def parse_resources(raw: Mapping[str, Any]) -> Resources:
    known = {"num_workers", "cpus_per_worker", "use_gpu", "gpus_per_worker", "driver_cpus"}
    unknown = sorted(set(raw) - known)
    _check(not unknown, f"unknown key(s) {unknown} in [resources]; known keys: {sorted(known)}")
    if "use_gpu" in raw:
        _check(isinstance(raw["use_gpu"], bool), f"resources.use_gpu must be true or false, got {raw['use_gpu']!r}")
    return Resources(**raw)


def _reference(raw: Any) -> Reference:
    _check(isinstance(raw, Mapping), "reference must be a table")
    unknown = sorted(set(raw) - {"dataset", "source", "auc", "datasets"})
    _check(not unknown, f"unknown key(s) {unknown} in [reference]; known keys: auc, dataset, datasets, source")
    auc = raw.get("auc", {})
    _check(isinstance(auc, Mapping) and all(isinstance(v, (int, float)) for v in auc.values()),
           "reference.auc must map method names to numbers")
    return Reference(dataset=str(raw.get("dataset", "")), source=str(raw.get("source", "")),
                     auc={k: float(v) for k, v in auc.items()},
                     datasets=_reference_datasets(raw.get("datasets", {})))


REFERENCE_METRICS = ("auc", "logloss")


def _reference_datasets(raw: Any) -> dict[str, dict[str, dict[str, float]]]:
    _check(isinstance(raw, Mapping), "reference.datasets must be a table of [reference.datasets.NAME] tables")
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for dataset, metrics in raw.items():
        _check(isinstance(metrics, Mapping), f"[reference.datasets.{dataset}] must be a table")
        unknown = sorted(set(metrics) - set(REFERENCE_METRICS))
        _check(not unknown, f"unknown metric(s) {unknown} in [reference.datasets.{dataset}]; "
                            f"known: {', '.join(REFERENCE_METRICS)}")
        figures[dataset] = {}
        for metric, values in metrics.items():
            _check(isinstance(values, Mapping) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       for v in values.values()),
                   f"reference.datasets.{dataset}.{metric} must map method names to numbers")
            figures[dataset][metric] = {k: float(v) for k, v in values.items()}
    return figures


def _int(value: Any, name: str) -> int:
    _check(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer, got {value!r}")
    return int(value)


def _number(value: Any, name: str) -> float:
    _check(isinstance(value, (int, float)) and not isinstance(value, bool), f"{name} must be a number, got {value!r}")
    return float(value)


def _replace(study: Study, **changes: Any) -> Study:
    return dataclasses.replace(study, **changes)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise StudyError(message)
