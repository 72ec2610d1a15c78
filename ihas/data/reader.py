"""Streaming readers: a raw file (CSV/TSV, plain or gzip, or Parquet) as chunks of string columns.

Memory does not grow with the file: CSV/TSV is read with `pyarrow.csv.open_csv` in blocks, Parquet
by record batch. Every column is read as a string ("" for missing) so that the encoder alone
decides what a value means. Rows with the wrong number of fields are skipped by the parser and
counted (`wrong_field_count`) with their line numbers; they are never shifted into other columns.
CRLF line ends are handled by the parser (the CR is not part of the last value).
"""

from __future__ import annotations

import csv
import gzip
import logging
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ihas.data.errors import DataError
from ihas.data.schema import Schema

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 32 << 20  # bytes of text per CSV chunk
PARQUET_BATCH_ROWS = 256 * 1024
GZIP_MAGIC = b"\x1f\x8b"
MAX_REPORTED_LINES = 5


class Source:
    """A file (or an in-memory table) that yields chunks with the label and field columns as strings."""

    schema: Schema
    paths: tuple[Path, ...]
    description: str

    def __init__(self) -> None:
        self.wrong_field_count = 0
        self.bad_lines: list[tuple[int | None, str]] = []

    @property
    def needed_columns(self) -> list[str]:
        return [self.schema.label, *self.schema.fields]

    def batches(self) -> Iterator[pa.RecordBatch]:
        """One pass over the data. Resets the wrong-field-count tally, which each pass recounts."""
        raise NotImplementedError

    def _reset(self) -> None:
        self.wrong_field_count = 0
        self.bad_lines = []


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found; check the --input path")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; pass the path of the data file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); pass a file with data rows")


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def open_text_stream(path: Path) -> pa.NativeFile:
    """A binary input stream of the file's text, decompressing gzip (detected by its magic bytes)."""
    return pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None)


def find_non_utf8(path: Path) -> tuple[int, int, bytes] | None:
    """(line number, byte offset in the line, the line) of the first line that is not UTF-8, or None."""
    opener = gzip.open if is_gzip(path) else open
    with opener(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, exc.start, line
    return None


def _utf8_error(path: Path) -> DataError:
    found = find_non_utf8(path)
    where = f"line {found[0]} (byte {found[1]} of that line: {found[2][max(0, found[1] - 10):found[1] + 10]!r})" if found else "somewhere"
    return DataError(f"{path}: {where} is not valid UTF-8. Re-encode the file as UTF-8 "
                     f"(e.g. `iconv -f latin1 -t utf-8 IN > OUT`) and prepare again")


class CsvSource(Source):
    """CSV or TSV text, plain or gzip, read in blocks."""

    def __init__(self, path: str | Path, schema: Schema, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        super().__init__()
        self.path = Path(path)
        self.paths = (self.path,)
        self.description = str(self.path)
        self.block_size = block_size
        _check_file(self.path)
        if schema.header:
            schema = schema.with_columns(self._read_header(schema))
        self.schema = schema

    def _read_header(self, schema: Schema) -> tuple[str, ...]:
        opener = gzip.open if is_gzip(self.path) else open
        with opener(self.path, "rb") as fh:
            raw = fh.readline()
        if not raw.strip():
            raise DataError(f"{self.path}: line 1 (the header) is empty"
                            + ("; the file has no data" if len(raw) == 0 else "; remove the blank line"))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _utf8_error(self.path) from exc
        names = next(csv.reader([text.rstrip("\r\n")], delimiter=schema.sep))
        return tuple(name.strip() for name in names)

    def _on_invalid(self, row: pacsv.InvalidRow) -> str:
        self.wrong_field_count += 1
        if len(self.bad_lines) < MAX_REPORTED_LINES:
            self.bad_lines.append((row.number, row.text[:120]))
        return "skip"

    def batches(self) -> Iterator[pa.RecordBatch]:
        self._reset()
        schema = self.schema
        needed = self.needed_columns
        read_options = pacsv.ReadOptions(column_names=list(schema.columns), skip_rows=1 if schema.header else 0,
                                         block_size=self.block_size, use_threads=False)
        # use_threads=False: the parser then reports the line number of each rejected row.
        parse_options = pacsv.ParseOptions(delimiter=schema.sep, quote_char='"' if schema.format == "csv" else False,
                                           invalid_row_handler=self._on_invalid)
        convert_options = pacsv.ConvertOptions(column_types={c: pa.string() for c in needed}, include_columns=needed,
                                               strings_can_be_null=False, quoted_strings_can_be_null=False,
                                               null_values=[])
        with open_text_stream(self.path) as stream:
            try:
                reader = pacsv.open_csv(stream, read_options=read_options, parse_options=parse_options,
                                        convert_options=convert_options)
                for batch in reader:
                    yield batch
            except pa.ArrowInvalid as exc:
                if "UTF8" in str(exc) or "UTF-8" in str(exc):
                    raise _utf8_error(self.path) from exc
                if "Empty CSV file" in str(exc):
                    return
                raise DataError(f"{self.path}: cannot parse as {schema.format.upper()} "
                                f"(delimiter {schema.sep!r}): {exc}") from exc
            except (OSError, EOFError) as exc:
                raise DataError(f"{self.path}: read failed ({exc}); is the file truncated or a broken gzip?") from exc


class ParquetSource(Source):
    """A Parquet file, read by record batch; columns are cast to strings (null -> "")."""

    def __init__(self, path: str | Path, schema: Schema) -> None:
        super().__init__()
        self.path = Path(path)
        self.paths = (self.path,)
        self.description = str(self.path)
        _check_file(self.path)
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{self.path}: not a readable Parquet file ({exc})") from exc
        self.schema = schema.with_columns(tuple(self._file.schema_arrow.names))

    def batches(self) -> Iterator[pa.RecordBatch]:
        self._reset()
        for batch in self._file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=self.needed_columns):
            yield strings_batch(batch)


class TableSource(Source):
    """An in-memory table (for example MovieLens joined from its three files)."""

    def __init__(self, table: pa.Table, schema: Schema, paths: tuple[Path, ...], description: str) -> None:
        super().__init__()
        self.schema = schema.with_columns(tuple(table.column_names))
        self.table = table
        self.paths = paths
        self.description = description

    def batches(self) -> Iterator[pa.RecordBatch]:
        self._reset()
        for batch in self.table.select(self.needed_columns).to_batches(max_chunksize=PARQUET_BATCH_ROWS):
            yield strings_batch(batch)


def strings_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Every column as a string array, null -> ""."""
    import pyarrow.compute as pc

    columns = []
    for col in batch.columns:
        if not pa.types.is_string(col.type):
            col = pc.cast(col, pa.string())
        columns.append(pc.fill_null(col, ""))
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def open_source(schema: Schema, path: str | Path, block_size: int = DEFAULT_BLOCK_SIZE) -> Source:
    if schema.format == "parquet":
        return ParquetSource(path, schema)
    return CsvSource(path, schema, block_size=block_size)
