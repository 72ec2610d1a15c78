"""Input layouts: the `Schema` dataclass, the built-in presets and schema-file loading.

A schema describes how to read one raw file: its format (csv, tsv or parquet), delimiter, whether line 1
is a header, the column names when it is not, the label column, and which columns are categorical,
numeric or dropped. Every column of the file must be declared in exactly one of those roles, so a
typo or a new column is an error that names it instead of a silently missing feature.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ihas.data.errors import DataError

FORMATS = ("csv", "tsv", "parquet")
DEFAULT_MIN_COUNT = 10
SCHEMA_KEYS = ("name", "format", "delimiter", "header", "columns", "label", "categorical", "numeric",
               "drop", "label_threshold", "min_count")


@dataclass(frozen=True)
class Schema:
    """How to read one raw file. Fields are the categorical and numeric columns, in file order."""

    name: str
    format: str
    label: str
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    header: bool = True
    delimiter: str | None = None  # None: "," for csv, "\t" for tsv
    columns: tuple[str, ...] | None = None  # required when header is false
    label_threshold: float | None = None  # None: the label must be 0 or 1; else label = value >= threshold
    min_count: int = DEFAULT_MIN_COUNT  # the schema's default; --min-count overrides it
    source_note: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise DataError(f"schema {self.name!r}: format {self.format!r} is not one of {', '.join(FORMATS)}")
        if not self.header and self.format != "parquet" and not self.columns:
            raise DataError(f"schema {self.name!r}: header = false needs `columns` (the names of all columns, in order)")
        if not (self.categorical or self.numeric):
            raise DataError(f"schema {self.name!r}: declare at least one categorical or numeric column")
        roles = [self.label, *self.categorical, *self.numeric, *self.drop]
        dupes = sorted({c for c in roles if roles.count(c) > 1})
        if dupes:
            raise DataError(f"schema {self.name!r}: column(s) {', '.join(dupes)} declared in more than one role "
                            "(label, categorical, numeric, drop); give each column one role")
        if self.columns is not None:
            self.check_columns(self.columns, where="its `columns` list")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise DataError(f"schema {self.name!r}: delimiter {self.delimiter!r} must be one character")
        if self.min_count < 1:
            raise DataError(f"schema {self.name!r}: min_count must be at least 1, got {self.min_count}")

    @property
    def sep(self) -> str:
        if self.delimiter is not None:
            return self.delimiter
        return "\t" if self.format == "tsv" else ","

    def check_columns(self, columns: tuple[str, ...] | list[str], where: str) -> None:
        """Raise a DataError naming declared columns missing from `columns` and undeclared ones in it."""
        present = set(columns)
        declared = [self.label, *self.categorical, *self.numeric, *self.drop]
        missing = [c for c in declared if c not in present]
        if missing:
            raise DataError(f"schema {self.name!r}: column(s) {', '.join(missing)} not found in {where} "
                            f"(it has: {', '.join(columns)}); fix the schema's column names")
        undeclared = [c for c in columns if c not in set(declared)]
        if undeclared:
            raise DataError(f"schema {self.name!r}: column(s) {', '.join(undeclared)} in {where} are not declared; "
                            "list each under categorical, numeric or drop")

    def with_columns(self, columns: tuple[str, ...]) -> "Schema":
        """The schema resolved against the file's actual column names."""
        self.check_columns(columns, where="the input header")
        return replace(self, columns=tuple(columns))

    @property
    def fields(self) -> tuple[str, ...]:
        """Feature columns in file order (declaration order when the columns are not known yet)."""
        wanted = set(self.categorical) | set(self.numeric)
        if self.columns is not None:
            return tuple(c for c in self.columns if c in wanted)
        return (*self.numeric, *self.categorical)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("source_note")
        out["delimiter"] = self.sep if self.format != "parquet" else None
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


# --- presets --------------------------------------------------------------------------------------

CRITEO_NUMERIC = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))
AVAZU_FIELDS = ("hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
                "app_category", "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
                "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21")
MOVIELENS_FIELDS = ("user_id", "item_id", "age", "gender", "occupation", "zip_code", "release_year", "genres")
# Without --min-count, MovieLens-100K keeps values seen 5 times in training: with 10, about a third
# of the 1,682 items would share the out-of-vocabulary id, which makes a weak demo.
MOVIELENS_MIN_COUNT = 5


def preset(name: str) -> Schema:
    """The schema of a built-in layout: criteo, avazu or movielens-100k."""
    if name == "criteo":
        return Schema(name="criteo", format="tsv", header=False, label="label",
                      columns=("label", *CRITEO_NUMERIC, *CRITEO_CATEGORICAL),
                      numeric=CRITEO_NUMERIC, categorical=CRITEO_CATEGORICAL)
    if name == "avazu":
        # Raw Kaggle layout (24 columns with header); `hour` (YYMMDDHH) is kept as given, as a category.
        return Schema(name="avazu", format="csv", header=True, label="click", drop=("id",),
                      categorical=AVAZU_FIELDS)
    if name == "movielens-100k":
        # The joined table built by ihas.data.movielens: ratings + user + item attributes.
        # `genres` is RecBole's `class` token_seq kept whole ("Action Adventure Thriller") as one value.
        return Schema(name="movielens-100k", format="tsv", header=True, label="rating", label_threshold=4.0,
                      columns=("user_id", "item_id", "rating", *MOVIELENS_FIELDS[2:]),
                      categorical=MOVIELENS_FIELDS, min_count=MOVIELENS_MIN_COUNT)
    raise DataError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)} or --schema FILE")


PRESETS = ("criteo", "avazu", "movielens-100k")


def load_schema_file(path: str | Path) -> Schema:
    """Read a schema from JSON or TOML (by extension; anything else is tried as JSON, then TOML)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"schema file {path} not found; pass the path of a JSON or TOML schema")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            try:
                raw = json.loads(text)
            except json.JSONDecodeError:
                raw = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"schema file {path} is not valid JSON or TOML: {exc}") from exc
    if not isinstance(raw, dict):
        raise DataError(f"schema file {path}: expected a table/object at the top level")
    unknown = sorted(set(raw) - set(SCHEMA_KEYS))
    if unknown:
        raise DataError(f"schema file {path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SCHEMA_KEYS)}")
    for key in ("format", "label"):
        if key not in raw:
            raise DataError(f"schema file {path}: missing required key `{key}`")
    kwargs: dict[str, Any] = {"name": str(raw.get("name", path.stem))}
    for key in ("format", "label"):
        kwargs[key] = str(raw[key])
    for key in ("categorical", "numeric", "drop", "columns"):
        if key in raw:
            value = raw[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DataError(f"schema file {path}: `{key}` must be a list of column names")
            kwargs[key] = tuple(value)
    if "header" in raw:
        if not isinstance(raw["header"], bool):
            raise DataError(f"schema file {path}: `header` must be true or false, got {raw['header']!r}")
        kwargs["header"] = raw["header"]
    if "delimiter" in raw:
        kwargs["delimiter"] = str(raw["delimiter"])
    if "label_threshold" in raw:
        kwargs["label_threshold"] = float(raw["label_threshold"])
    if "min_count" in raw:
        kwargs["min_count"] = int(raw["min_count"])
    kwargs["source_note"] = str(path)
    return Schema(**kwargs)
