"""Streaming readers: a raw file (CSV/TSV, plain or gzip, or Parquet) as chunks of string columns.

Memory does not grow with the file: CSV/TSV is cut into blocks of whole lines (32 MiB by default)
and each block is parsed by `pyarrow.csv.read_csv` on its own, so one block is in memory at a
time (pyarrow's own streaming reader reads several blocks ahead); Parquet is read by record batch. Every column is read as a string ("" for missing) so that the encoder alone
decides what a value means. Rows with the wrong number of fields are skipped by the parser and
counted (`wrong_field_count`) with their line numbers; they are never shifted into other columns.
CRLF line ends are handled by the parser (the CR is not part of the last value).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import logging
import sys
from pathlib import Path
from typing import Iterator, NamedTuple

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


class BadLine(NamedTuple):
    """A line rejected for its number of fields: line number (None when unknown), text, field counts."""

    number: int | None
    text: str
    expected: int
    found: int


class Source:
    """A file (or an in-memory table) that yields chunks with the label and field columns as strings."""

    schema: Schema
    paths: tuple[Path, ...]
    description: str

    def __init__(self) -> None:
        self.wrong_field_count = 0
        self.bad_lines: list[BadLine] = []

    @property
    def needed_columns(self) -> list[str]:
        return [self.schema.label, *self.schema.fields]

    def batches(self, line_numbers: bool = True) -> Iterator[pa.RecordBatch]:
        """One pass over the data. Resets the wrong-field-count tally, which each pass recounts.

        `line_numbers`: report the line of each wrong row (may be slower).
        """
        raise NotImplementedError

    def _reset(self, line_numbers: bool = True) -> None:
        self.wrong_field_count = 0
        if line_numbers:
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


def find_non_utf8(lines, first_line: int = 1) -> tuple[int, int, bytes] | None:
    """(line number, byte offset in the line, the line) of the first line that is not UTF-8, or None."""
    for number, line in enumerate(lines, start=first_line):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return number, exc.start, line
    return None


def _utf8_error(path: Path, block: bytes | None = None, first_line: int = 1) -> DataError:
    """The error for non-UTF-8 input, naming the line: searched in `block` when given, else in the file."""
    if block is not None:
        found = find_non_utf8(block.split(b"\n"), first_line)
    else:
        opener = gzip.open if is_gzip(path) else open
        with opener(path, "rb") as fh:
            found = find_non_utf8(fh)
    if found:
        number, offset, line = found
        where = f"line {number} (byte {offset} of that line: {line[max(0, offset - 10):offset + 10]!r})"
    else:
        where = "a line"
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

    def _blocks(self) -> Iterator[tuple[int, bytes]]:
        """(number of the block's first line, block) for blocks of whole lines, header line excluded."""
        line = 1
        carry = b""
        with open_text_stream(self.path) as stream:
            try:
                while True:
                    data = stream.read(self.block_size)
                    if not data:
                        break
                    buf = carry + data if carry else data
                    cut = buf.rfind(b"\n")
                    if cut < 0:
                        carry = buf
                        continue
                    block, carry = buf[:cut + 1], buf[cut + 1:]
                    yield line, block
                    line += block.count(b"\n")
            except (OSError, EOFError) as exc:
                raise DataError(f"{self.path}: read failed ({exc}); is the file truncated or a broken gzip?") from exc
        if carry:
            yield line, carry

    def batches(self, line_numbers: bool = True) -> Iterator[pa.RecordBatch]:
        """Blocks of about `block_size` bytes, each parsed on its own: memory holds one block at a time.

        With `line_numbers` the parser runs single-threaded and reports each rejected row's line;
        without, it parses a block on all cores.
        """
        self._reset(line_numbers)
        schema = self.schema
        needed = self.needed_columns
        read_options = pacsv.ReadOptions(column_names=list(schema.columns), use_threads=not line_numbers,
                                         block_size=max(1 << 20, self.block_size // 8))
        convert_options = pacsv.ConvertOptions(column_types={c: pa.string() for c in needed}, include_columns=needed,
                                               strings_can_be_null=False, quoted_strings_can_be_null=False,
                                               null_values=[])
        first_line = 0

        def on_invalid(row: pacsv.InvalidRow) -> str:
            self.wrong_field_count += 1
            if line_numbers and len(self.bad_lines) < MAX_REPORTED_LINES:
                number = None if row.number is None else first_line + row.number - 1
                self.bad_lines.append(BadLine(number, row.text[:120], row.expected_columns, row.actual_columns))
            return "skip"

        parse_options = pacsv.ParseOptions(delimiter=schema.sep, quote_char='"' if schema.format == "csv" else False,
                                           invalid_row_handler=on_invalid)
        for first_line, block in self._blocks():
            if schema.header and first_line == 1:
                # Drop the header line (already read by _read_header).
                cut = block.find(b"\n")
                block = block[cut + 1:] if cut >= 0 else b""
                first_line = 2
            if not block.strip():
                continue
            decode_errors: list[BaseException] = []
            try:
                with _collect_row_decode_errors(decode_errors):
                    table = pacsv.read_csv(pa.py_buffer(block), read_options=read_options,
                                           parse_options=parse_options, convert_options=convert_options)
            except pa.ArrowInvalid as exc:
                if decode_errors or "UTF8" in str(exc) or "UTF-8" in str(exc):
                    raise _utf8_error(self.path, block, first_line) from exc
                if "Empty CSV file" in str(exc):
                    continue
                raise DataError(f"{self.path}: cannot parse as {schema.format.upper()} near line {first_line} "
                                f"(delimiter {schema.sep!r}): {exc}") from exc
            if table.num_rows:
                yield table.combine_chunks().to_batches()[0]


@contextlib.contextmanager
def _collect_row_decode_errors(errors: list[BaseException]) -> Iterator[None]:
    """Collect the UnicodeDecodeErrors that pyarrow raises, and cannot pass on, for invalid rows.

    pyarrow 26 decodes an invalid row's text as UTF-8 before it calls `invalid_row_handler`. On a
    binary file that decode fails inside pyarrow's callback, Python prints the error as "Exception
    ignored" on stderr, and `read_csv` then raises a plain parse error. Collecting it lets the
    caller report the file as not UTF-8 text instead.
    """
    previous = sys.unraisablehook

    def hook(unraisable: "sys.UnraisableHookArgs") -> None:
        if isinstance(unraisable.exc_value, UnicodeDecodeError):
            errors.append(unraisable.exc_value)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


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

    def batches(self, line_numbers: bool = True) -> Iterator[pa.RecordBatch]:
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

    def batches(self, line_numbers: bool = True) -> Iterator[pa.RecordBatch]:
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
