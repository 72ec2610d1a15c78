"""Orchestration of `ihas prepare`: two streaming passes and an atomic output directory.

Pass 1 reads the source, validates each row (label, numeric values), assigns its split from
(seed, row index) and counts the training split's values per field. Vocabularies are then built
(count >= min_count is kept). Pass 2 reads the source again, encodes every valid row and writes it
to the Parquet file of its split. Only the vocabularies grow with the data; chunks are dropped as
soon as they are written.

The output is built in a hidden sibling directory (`.NAME.tmp-PID-XXXX`), `metadata.json` is
written last, and the directory is then renamed into place, so a failed or interrupted run never
leaves something that `load_prepared` would take for a finished dataset. Leftover temporary
directories of dead runs are removed by the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ihas.data.dataset import FORMAT_VERSION, LABEL_COLUMN, METADATA_FILE, SPLITS
from ihas.data.encode import SPLIT_NAMES, assign_splits, numeric_tokens, parse_labels
from ihas.data.errors import DataError
from ihas.data.reader import Source
from ihas.data.vocab import ValueCounter, Vocabulary

log = logging.getLogger(__name__)

DEFAULT_SEED = 2023
REJECT_REASONS = ("wrong_field_count", "invalid_label", "invalid_numeric")
PROGRESS_SECONDS = 5.0
_TMP_MARK = ".tmp-"


@dataclass
class _PassStats:
    """What pass 1 learns: per-split row and positive counts, rejections, and value counts."""

    rows: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.int64))
    positives: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.int64))
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))
    parsed_rows: int = 0


def sha256_file(path: Path, chunk: int = 4 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def prepare(source: Source, output: str | Path, *, min_count: int | None = None, seed: int = DEFAULT_SEED,
            force: bool = False) -> dict[str, Any]:
    """Prepare `source` into the directory `output`; return the metadata written there.

    `min_count` None means the schema's default (10, or the preset's own). Raises DataError for
    input that cannot be prepared; then no output directory is created or changed.
    """
    schema = source.schema
    min_count = schema.min_count if min_count is None else int(min_count)
    if min_count < 1:
        raise DataError(f"--min-count must be at least 1, got {min_count}")
    output = Path(output)
    _check_output(output, force)
    _remove_stale_tmp(output)
    log.info("prepare: schema %s, %d fields, source %s, seed %d, min_count %d (count >= min_count is kept)",
             schema.name, len(schema.fields), source.description, seed, min_count)

    # Source identity: size and sha256 of every input file.
    sources = [{"path": str(p.resolve()), "size": p.stat().st_size, "sha256": sha256_file(p)} for p in source.paths]

    # Pass 1: validate, split, count training values.
    counters = {name: ValueCounter() for name in schema.fields}
    stats = _PassStats()
    for chunk, labels, valid, splits in _validated_chunks(source, seed, "pass 1/2 (count)", stats):
        train = valid & (splits == 0)
        if train.any():
            train_mask = pa.array(train)
            for name in schema.fields:
                counters[name].update(pc.filter(chunk[name], train_mask))
    stats.rejected["wrong_field_count"] = source.wrong_field_count
    _log_rejections(source, stats)
    _check_splits(source, stats)

    # Vocabularies from the training split only.
    vocabs = {name: counters[name].vocabulary(min_count) for name in schema.fields}
    del counters
    for name, vocab in vocabs.items():
        log.debug("field %s: %d distinct training values, %d kept", name, vocab.seen_count, vocab.kept_count)

    # Pass 2: encode and write, into a temporary sibling directory.
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}{_TMP_MARK}{os.getpid()}-", dir=output.parent))
    # mkdtemp creates the folder readable by its owner only; a finished dataset is shared like any
    # other output folder.
    tmp.chmod(0o755)
    try:
        written = _encode_pass(source, schema, vocabs, seed, tmp)
        if not np.array_equal(written, stats.rows):
            raise DataError(f"{source.description}: the input changed between the two passes "
                            f"({stats.rows.tolist()} rows, then {written.tolist()}); do not modify it while preparing")
        metadata = _metadata(source, schema, vocabs, stats, sources, seed, min_count)
        # metadata.json last: its presence marks a finished dataset.
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        _publish(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("prepare: wrote %s (rows %s, rejected %s, fingerprint %s)", output, metadata["rows"],
             metadata["rejected"], metadata["fingerprint"][:12])
    return metadata


def _validated_chunks(source: Source, seed: int, label: str, stats: _PassStats | None):
    """Yield (chunk, labels int8, valid bool, splits uint8) for every chunk, with progress logging."""
    schema = source.schema
    start_time = last_log = time.monotonic()
    row = 0
    first = True
    # Pass 1 (stats given) parses with line numbers for the rejection report; pass 2 on all cores.
    for chunk in source.batches(line_numbers=stats is not None):
        n = chunk.num_rows
        if n == 0:
            continue
        if first and not schema.header and schema.format != "parquet":
            _check_not_header(source, chunk)
        first = False
        labels, bad_label = parse_labels(chunk[schema.label], schema.label_threshold)
        bad_numeric = np.zeros(n, dtype=bool)
        tokens, invalid_by_field = {}, {}
        raw = chunk
        for name in schema.numeric:
            tokens[name], invalid = numeric_tokens(chunk[name])
            if invalid.any():
                invalid_by_field[name] = invalid
                bad_numeric |= invalid
        if tokens:
            columns = {name: (tokens[name] if name in tokens else chunk[name]) for name in [schema.label, *schema.fields]}
            chunk = pa.RecordBatch.from_pydict(columns)
        # A row with a bad label is counted under invalid_label only, even if a value is also bad.
        bad_numeric &= ~bad_label
        valid = ~(bad_label | bad_numeric)
        splits = assign_splits(seed, row, n)
        row += n
        if stats is not None:
            stats.rejected["invalid_label"] += int(bad_label.sum())
            stats.rejected["invalid_numeric"] += int(bad_numeric.sum())
            stats.parsed_rows += n
            for s in range(3):
                in_split = valid & (splits == s)
                stats.rows[s] += int(in_split.sum())
                stats.positives[s] += int(labels[in_split].sum())
            if bad_label.any() or bad_numeric.any():
                _remember_bad_values(source, raw, row - n, bad_label, bad_numeric, invalid_by_field)
        now = time.monotonic()
        if now - last_log >= PROGRESS_SECONDS:
            last_log = now
            log.info("%s: %d rows read, %.0f rows/s", label, row, row / max(now - start_time, 1e-9))
        yield chunk, labels, valid, splits
    elapsed = time.monotonic() - start_time
    log.info("%s: done, %d rows in %.1f s (%.0f rows/s)", label, row, elapsed, row / max(elapsed, 1e-9))


def _encode_pass(source: Source, schema, vocabs: dict[str, Vocabulary], seed: int, tmp: Path) -> np.ndarray:
    arrow_schema = pa.schema([*((name, pa.int32()) for name in schema.fields), (LABEL_COLUMN, pa.int8())])
    writers = {s: pq.ParquetWriter(tmp / f"{s}.parquet", arrow_schema, compression="zstd") for s in SPLITS}
    written = np.zeros(3, dtype=np.int64)
    try:
        for chunk, labels, valid, splits in _validated_chunks(source, seed, "pass 2/2 (encode)", None):
            columns = [pa.array(vocabs[name].encode(chunk[name])) for name in schema.fields]
            table = pa.Table.from_arrays([*columns, pa.array(labels)], schema=arrow_schema)
            for s, split_name in enumerate(SPLIT_NAMES):
                mask = valid & (splits == s)
                count = int(mask.sum())
                if count:
                    writers[split_name].write_table(table.filter(pa.array(mask)))
                    written[s] += count
    finally:
        for writer in writers.values():
            writer.close()
    return written


def _check_not_header(source: Source, chunk: pa.RecordBatch) -> None:
    """Fail when line 1 of a headerless file looks like a header line (label not 0/1, values like names)."""
    schema = source.schema
    if source.bad_lines and source.bad_lines[0].number == 1:
        return  # line 1 had the wrong field count; it is already rejected
    label = chunk[schema.label][0].as_py()
    _, bad = parse_labels(pa.array([label]), schema.label_threshold)
    if not bad[0]:
        return
    row = {c: chunk[c][0].as_py() for c in [schema.label, *schema.fields]}
    names = {n.lower() for n in schema.columns or ()}
    # A header: several values equal column names, or a word as label and words in every numeric column.
    numeric_values = [row[c] for c in schema.numeric]
    words_in_numeric = bool(numeric_values) and all(v.replace("_", "").isalnum() and not v.lstrip("-").replace(".", "").isdigit()
                                                    for v in numeric_values)
    looks_like_names = (sum(str(v).lower() in names for v in row.values()) >= 2
                        or (label.replace("_", "").isalpha() and words_in_numeric))
    if looks_like_names:
        raise DataError(f"{source.description}: line 1 looks like a header (label column holds {label!r}), but "
                        f"schema {schema.name!r} has no header line. Remove that line, or prepare with "
                        "--schema FILE whose schema sets header = true")


def _remember_bad_values(source: Source, chunk, first_row: int, bad_label, bad_numeric, invalid_by_field) -> None:
    """Keep a few examples of rejected values for the log (data row = row index among parsed rows, from 1)."""
    schema = source.schema
    samples = source.__dict__.setdefault("bad_values", [])
    for i in np.flatnonzero(bad_label)[:5]:
        samples.append(f"data row {first_row + i + 1}: label {chunk[schema.label][int(i)].as_py()!r} "
                       "is not " + ("0 or 1" if schema.label_threshold is None else "a number"))
    for i in np.flatnonzero(bad_numeric)[:5]:
        name = next(f for f, invalid in invalid_by_field.items() if invalid[i])
        samples.append(f"data row {first_row + i + 1}: numeric column {name} holds {chunk[name][int(i)].as_py()!r}")
    del samples[10:]


def _log_rejections(source: Source, stats: _PassStats) -> None:
    for reason, n in stats.rejected.items():
        if n:
            log.warning("rejected %d row(s) of %s: %s", n, source.description, reason)
    for bad in source.bad_lines:
        log.warning("  wrong field count at line %s: expected %d fields, found %d: %r", bad.number, bad.expected,
                    bad.found, bad.text)
    for text in getattr(source, "bad_values", []):
        log.warning("  %s", text)


def _check_splits(source: Source, stats: _PassStats) -> None:
    total = int(stats.rows.sum())
    rejected = ", ".join(f"{k} {v}" for k, v in stats.rejected.items() if v) or "none"
    if total == 0:
        where = ""
        samples = getattr(source, "bad_values", [])
        # Point at an example of the most common reason, so the hint matches what went wrong.
        if source.bad_lines and stats.rejected["wrong_field_count"] >= max(stats.rejected.values()):
            first = source.bad_lines[0]
            where = (f" (first line with the wrong field count: line {first.number}, expected {first.expected} "
                     f"fields, found {first.found}: {first.text!r})")
        elif samples:
            where = f" (first rejected value: {samples[0]})"
        raise DataError(f"{source.description}: no valid data rows ({stats.parsed_rows} parsed, rejected: "
                        f"{rejected}){where}; check the file and the schema's layout")
    for s, name in enumerate(SPLIT_NAMES):
        n, pos = int(stats.rows[s]), int(stats.positives[s])
        if n == 0 or pos == 0 or pos == n:
            what = "no rows" if n == 0 else f"a single class ({n} rows, {pos} positive, {n - pos} negative)"
            raise DataError(f"{source.description}: the {name} split has {what}; splits have "
                            f"{stats.rows.tolist()} rows and {stats.positives.tolist()} positives. "
                            "Use more rows (both labels in every split) or another --seed")


def _metadata(source: Source, schema, vocabs, stats: _PassStats, sources, seed: int, min_count: int) -> dict[str, Any]:
    schema_json = schema.to_json()
    identity = {"sources": [s["sha256"] for s in sources], "schema": schema_json, "seed": seed, "min_count": min_count}
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    rows = {name: int(stats.rows[s]) for s, name in enumerate(SPLIT_NAMES)}
    label_rate = {name: float(stats.positives[s] / stats.rows[s]) for s, name in enumerate(SPLIT_NAMES)}
    label_rate["overall"] = float(stats.positives.sum() / stats.rows.sum())
    return {
        "format_version": FORMAT_VERSION,
        "fields": list(schema.fields),
        "field_dims": {name: vocabs[name].field_dim for name in schema.fields},
        "schema": schema_json,
        "rows": rows,
        "rejected": dict(stats.rejected),
        "label_rate": label_rate,
        "source": sources,
        "seed": seed,
        "min_count": min_count,
        "min_count_rule": "a value is kept when its training count >= min_count; others map to id 0",
        "distinct_train_values": {name: vocabs[name].seen_count for name in schema.fields},
        "fingerprint": fingerprint,
    }


def _check_output(output: Path, force: bool) -> None:
    if output.is_file() or output.is_symlink():
        raise DataError(f"{output} exists and is not a directory; choose another --output")
    if not output.exists():
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create the parent folder of --output {output}: {exc}; "
                            "choose another --output") from exc
        return
    if (output / METADATA_FILE).exists():
        if not force:
            raise DataError(f"{output} already contains a prepared dataset; add --force to replace it "
                            "or choose another --output")
        return
    if any(output.iterdir()):
        raise DataError(f"{output} exists, is not empty and is not a prepared dataset; "
                        "choose another --output or empty it")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_tmp(output: Path) -> None:
    """Remove temporary directories that interrupted runs for the same output left behind."""
    prefix = f".{output.name}{_TMP_MARK}"
    for path in output.parent.glob(f"{prefix}*"):
        pid_text = path.name[len(prefix):].split("-", 1)[0]
        if path.is_dir() and pid_text.isdigit() and (int(pid_text) == os.getpid() or not _pid_alive(int(pid_text))):
            log.info("removing %s, left by an interrupted run", path)
            shutil.rmtree(path, ignore_errors=True)


def _publish(tmp: Path, output: Path) -> None:
    """Move the finished directory into place; an existing dataset (with --force) is swapped out."""
    if output.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{output.name}{_TMP_MARK}{os.getpid()}-old-", dir=output.parent))
        os.rename(output, old / "dataset")
        try:
            os.rename(tmp, output)
        except BaseException:
            os.rename(old / "dataset", output)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, output)


def prepare_dataset(output: str | Path, *, preset: str | None = None, schema_file: str | Path | None = None,
                    input_path: str | Path | None = None, min_count: int | None = None, seed: int = DEFAULT_SEED,
                    force: bool = False) -> dict[str, Any]:
    """Library form of `ihas prepare`: a preset name or a schema file, an input, an output directory.

    For the movielens-100k preset `input_path` is the folder with the three files, or None to
    download them (see ihas.data.movielens). Returns the metadata written to `output`.
    """
    from ihas.data import schema as schemas
    from ihas.data.reader import open_source

    if (preset is None) == (schema_file is None):
        raise DataError("give exactly one of a preset name and a schema file")
    schema = schemas.preset(preset) if preset is not None else schemas.load_schema_file(schema_file)
    if preset == "movielens-100k":
        from ihas.data.movielens import movielens_source

        source = movielens_source(schema, input_path)
    else:
        if input_path is None:
            raise DataError(f"--input FILE is required for {'--preset ' + preset if preset else '--schema'}")
        source = open_source(schema, input_path)
    return prepare(source, output, min_count=min_count, seed=seed, force=force)
