"""Bad input: exact rejection counts, clear one-line errors, and no dataset left behind."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ihas.data.dataset import load_prepared
from ihas.data.encode import assign_splits
from ihas.data.prepare import DEFAULT_SEED

from tests.data_helpers import criteo_lines, error_lines, run_prepare


def _write(path, lines: list[bytes]):
    path.write_bytes(b"".join(lines))
    return path


def _criteo(capsys, path, out, *extra):
    return run_prepare(capsys, "--preset", "criteo", "--input", path, "--output", out, *extra)


def _fail(capsys, *args) -> str:
    code, out, err = run_prepare(capsys, *args)
    assert code == 2
    assert "Traceback" not in err
    (line,) = error_lines(err)
    return line


def _no_leftovers(tmp_path):
    return [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_wrong_field_count_is_rejected_never_shifted(shared_data, tmp_path, capsys, caplog):
    lines = criteo_lines(shared_data)
    broken = list(lines)
    bad = {3: b"\t".join(lines[2].split(b"\t")[:-1]) + b"\n",  # 39 fields
           10: lines[9].rstrip(b"\n") + b"\textra\n",  # 41 fields
           500: b"1\n",  # 1 field
           9999: b"0\t1\t2\n"}  # 3 fields
    for number, text in bad.items():
        broken[number - 1] = text
    _write(tmp_path / "broken.txt", broken)
    _write(tmp_path / "removed.txt", [line for i, line in enumerate(lines, 1) if i not in bad])
    code, _, err = _criteo(capsys, tmp_path / "broken.txt", tmp_path / "a")
    assert code == 0, err
    assert _criteo(capsys, tmp_path / "removed.txt", tmp_path / "b")[0] == 0
    a, b = load_prepared(tmp_path / "a"), load_prepared(tmp_path / "b")
    assert a.metadata["rejected"] == {"wrong_field_count": 4, "invalid_label": 0, "invalid_numeric": 0}
    assert sum(a.metadata["rows"].values()) == 10_000 - 4
    # Rejected rows leave no trace: identical to the file without those lines.
    assert a.field_dims == b.field_dims
    for split in ("train", "valid", "test"):
        assert np.array_equal(a.split(split).x, b.split(split).x)
    for number in bad:  # the log names each wrong line (first five)
        assert f"wrong field count at line {number}:" in caplog.text
    assert "line 3: expected 40 fields, found 39" in caplog.text
    assert "line 10: expected 40 fields, found 41" in caplog.text


def test_invalid_labels_and_non_numeric_values_are_counted(shared_data, tmp_path, capsys, caplog):
    lines = criteo_lines(shared_data)
    for i, label in zip((4, 40, 400, 4000), (b"2", b"-1", b"yes", b"")):
        lines[i] = label + lines[i][1:]
    for i in (7, 70, 700):
        fields = lines[i].split(b"\t")
        fields[3] = b"abc"  # I3
        lines[i] = b"\t".join(fields)
    code, _, err = _criteo(capsys, _write(tmp_path / "bad.txt", lines), tmp_path / "out")
    assert code == 0, err
    meta = load_prepared(tmp_path / "out").metadata
    assert meta["rejected"] == {"wrong_field_count": 0, "invalid_label": 4, "invalid_numeric": 3}
    assert sum(meta["rows"].values()) == 10_000 - 7
    assert "rejected 4 row(s)" in caplog.text
    assert "rejected 3 row(s)" in caplog.text
    assert "data row 401: label 'yes' is not 0 or 1" in caplog.text
    assert "data row 71: numeric column I3 holds 'abc'" in caplog.text


def test_negative_and_huge_integers_give_valid_ids(shared_data, tmp_path, capsys):
    lines = criteo_lines(shared_data)
    values = [b"-5", b"-999999999999999999999999", b"999999999999999999999999", b"18446744073709551617"]
    for k, i in enumerate(range(0, 400, 4)):
        fields = lines[i].split(b"\t")
        fields[2] = values[k % 4]  # I2
        lines[i] = b"\t".join(fields)
    code, _, err = _criteo(capsys, _write(tmp_path / "big.txt", lines), tmp_path / "out", "--min-count", "1")
    assert code == 0, err
    data = load_prepared(tmp_path / "out")
    assert data.metadata["rejected"]["invalid_numeric"] == 0
    assert sum(data.metadata["rows"].values()) == 10_000
    j = data.field_names.index("I2")
    assert (data.train.x[:, j] > 0).all()  # min-count 1: every training value has its own id
    assert data.train.x[:, j].max() < data.field_dims[j]


def test_header_line_in_a_headerless_file_fails_with_the_fix(shared_data, tmp_path, capsys):
    header = "\t".join(["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]) + "\n"
    path = _write(tmp_path / "h.txt", [header.encode(), *criteo_lines(shared_data)])
    line = _fail(capsys, "--preset", "criteo", "--input", path, "--output", tmp_path / "out")
    assert str(path) in line
    assert "line 1 looks like a header" in line
    assert "header = true" in line
    assert not (tmp_path / "out").exists()
    assert _no_leftovers(tmp_path)


def test_non_utf8_bytes_fail_naming_the_line(shared_data, tmp_path, capsys):
    lines = criteo_lines(shared_data)
    fields = lines[6].split(b"\t")
    fields[16] = b"caf\xe9"  # C3 on line 7, in latin-1
    lines[6] = b"\t".join(fields)
    path = _write(tmp_path / "latin1.txt", lines)
    line = _fail(capsys, "--preset", "criteo", "--input", path, "--output", tmp_path / "out")
    assert str(path) in line
    assert "line 7" in line
    assert "UTF-8" in line
    assert "iconv" in line
    assert not (tmp_path / "out").exists()
    assert _no_leftovers(tmp_path)
    gz = tmp_path / "latin1.txt.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert "line 7 " in _fail(capsys, "--preset", "criteo", "--input", gz, "--output", tmp_path / "out")
    # With a header line, lines are still counted from the top of the file.
    avazu = (shared_data / "deepctr-samples" / "avazu_sample.txt").read_bytes().splitlines(keepends=True)
    avazu[5] = avazu[5].replace(b",fe8cc448,", b",caf\xe9,", 1)
    bad = _write(tmp_path / "avazu.csv", avazu)
    line = _fail(capsys, "--preset", "avazu", "--input", bad, "--output", tmp_path / "out")
    assert "line 6 " in line
    assert str(bad) in line


def test_binary_input_error_has_no_traceback(shared_data, tmp_path, capsys):
    # A latin-1 byte in a row that also has the wrong number of fields reaches pyarrow's handler of
    # invalid rows, which cannot decode it. The error must still be the one-line UTF-8 message,
    # with no "Exception ignored" report of the decode failure on stderr.
    lines = criteo_lines(shared_data)
    lines[2] = b"\xff\xfe\x8b binary\tjunk\n"
    path = _write(tmp_path / "binary.txt", lines)
    code, _, err = run_prepare(capsys, "--preset", "criteo", "--input", path, "--output", tmp_path / "out")
    assert code == 2
    assert "Exception ignored" not in err
    assert "Traceback" not in err
    (line,) = error_lines(err)
    assert "line 3" in line
    assert "not valid UTF-8" in line
    assert not (tmp_path / "out").exists()
    assert _no_leftovers(tmp_path)


def test_empty_missing_and_header_only_files(shared_data, tmp_path, capsys):
    (tmp_path / "empty.txt").write_bytes(b"")
    line = _fail(capsys, "--preset", "criteo", "--input", tmp_path / "empty.txt", "--output", tmp_path / "o1")
    assert str(tmp_path / "empty.txt") in line
    assert "empty" in line
    line = _fail(capsys, "--preset", "criteo", "--input", tmp_path / "nope.txt", "--output", tmp_path / "o2")
    assert str(tmp_path / "nope.txt") in line
    assert "not found" in line
    header = (shared_data / "deepctr-samples" / "avazu_sample.txt").read_text().splitlines()[0]
    (tmp_path / "header_only.csv").write_text(header + "\n")
    line = _fail(capsys, "--preset", "avazu", "--input", tmp_path / "header_only.csv", "--output", tmp_path / "o3")
    assert "no valid data rows" in line
    assert "0 parsed" in line
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))
    assert _no_leftovers(tmp_path)


def test_all_rows_invalid_points_at_the_main_reason(shared_data, tmp_path, capsys):
    # Every label is "yes" and one line also has the wrong field count: the error's example must be
    # a rejected label, the reason of nearly every row, not the one short line.
    lines = [b"yes" + line[1:] for line in criteo_lines(shared_data)[:200]]
    lines[0] = b"yes\t1\t2\n"
    line = _fail(capsys, "--preset", "criteo", "--input", _write(tmp_path / "labels.txt", lines),
                 "--output", tmp_path / "o")
    assert "no valid data rows" in line
    assert "invalid_label 199" in line
    assert "first rejected value: data row 1: label 'yes' is not 0 or 1" in line
    assert "wrong field count" not in line
    # With mostly short lines, the example is the first short line and its field counts.
    short = [b"0\t1\n"] * 5 + [b"yes" + criteo_lines(shared_data)[0][1:]]
    line = _fail(capsys, "--preset", "criteo", "--input", _write(tmp_path / "short.txt", short),
                 "--output", tmp_path / "o")
    assert "line 1, expected 40 fields, found 2" in line
    assert not (tmp_path / "o").exists()


def test_single_class_split_fails_naming_the_split(shared_data, tmp_path, capsys):
    negatives = [line for line in criteo_lines(shared_data) if line.startswith(b"0")][:300]
    line = _fail(capsys, "--preset", "criteo", "--input", _write(tmp_path / "neg.txt", negatives), "--output", tmp_path / "o")
    assert "the train split has a single class" in line
    assert "--seed" in line
    n = int((assign_splits(DEFAULT_SEED, 0, 300) == 0).sum())
    assert f"({n} rows, 0 positive, {n} negative)" in line
    assert not (tmp_path / "o").exists()
    assert _no_leftovers(tmp_path)


def test_split_with_no_rows_fails_naming_the_split(shared_data, tmp_path, capsys):
    lines = criteo_lines(shared_data)
    pos = [line for line in lines if line.startswith(b"1")]
    neg = [line for line in lines if line.startswith(b"0")]
    rows = [pos[0], neg[0], pos[1], neg[1]]
    splits = assign_splits(DEFAULT_SEED, 0, len(rows))
    empty = [name for s, name in enumerate(("train", "valid", "test")) if (splits == s).sum() == 0]
    assert empty, "the definition leaves some split of 4 rows empty for this seed"
    line = _fail(capsys, "--preset", "criteo", "--input", _write(tmp_path / "tiny.txt", rows), "--output", tmp_path / "o")
    first_bad = next(name for s, name in enumerate(("train", "valid", "test"))
                     if (splits == s).sum() == 0 or len({rows[i][:1] for i in np.flatnonzero(splits == s)}) == 1)
    assert f"the {first_bad} split has" in line
    assert "more rows" in line


def test_existing_dataset_needs_force_and_force_replaces_it(shared_data, tmp_path, capsys):
    src = shared_data / "criteo-1tb-day0-10k" / "day_0.part.txt"
    out = tmp_path / "ds"
    assert _criteo(capsys, src, out)[0] == 0
    before = load_prepared(out).fingerprint
    line = _fail(capsys, "--preset", "criteo", "--input", src, "--output", out, "--seed", "5")
    assert str(out) in line
    assert "--force" in line
    assert load_prepared(out).fingerprint == before
    assert _criteo(capsys, src, out, "--seed", "5", "--force")[0] == 0
    assert load_prepared(out).metadata["seed"] == 5
    assert load_prepared(out).fingerprint != before
    assert _no_leftovers(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    line = _fail(capsys, "--preset", "criteo", "--input", src, "--output", tmp_path / "other", "--force")
    assert "not a prepared dataset" in line
    assert (tmp_path / "other" / "notes.txt").exists()


def test_failure_during_writing_leaves_nothing_and_stale_tmp_is_cleaned(shared_data, tmp_path, capsys, monkeypatch):
    import ihas.data.prepare as prep

    src = shared_data / "criteo-1tb-day0-10k" / "day_0.part.txt"
    # A leftover of a killed run (pid that does not exist) is removed by the next run.
    stale = tmp_path / ".ds.tmp-999999999-abcd"
    stale.mkdir()
    (stale / "train.parquet").write_bytes(b"partial")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "_encode_pass", interrupted)
    with pytest.raises(KeyboardInterrupt):
        from ihas.data.reader import open_source
        from ihas.data.schema import preset

        prep.prepare(open_source(preset("criteo"), src), tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert not stale.exists()
    assert _no_leftovers(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a finished prepared dataset"):
        load_prepared(tmp_path / "ds")


def test_schema_file_errors_name_the_problem(shared_data, tmp_path, capsys):
    src = shared_data / "deepctr-samples" / "avazu_sample.txt"
    base = {"format": "csv", "header": True, "label": "click", "drop": ["id"],
            "categorical": ["hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
                            "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
                            "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]}
    cases = [({"colour": "red"}, "unknown key(s) colour"),
             ({"categorical": base["categorical"] + ["C99"]}, "C99 not found in the input header"),
             ({"categorical": base["categorical"][1:]}, "hour in the input header are not declared"),
             ({"numeric": ["C1"]}, "C1 declared in more than one role"),
             ({"header": False}, "header = false needs `columns`")]
    for change, expected in cases:
        path = tmp_path / "s.json"
        path.write_text(json.dumps({**base, **change}))
        line = _fail(capsys, "--schema", path, "--input", src, "--output", tmp_path / "o", "--min-count", "1")
        assert expected in line


def test_parquet_input_through_a_schema(shared_data, tmp_path, capsys):
    rows = 2_000
    rng = np.random.default_rng(0)
    table = pa.table({"y": rng.integers(0, 2, rows), "n": rng.integers(-3, 1000, rows),
                      "c": [f"v{i % 7}" for i in range(rows)], "junk": np.zeros(rows)})
    pq.write_table(table, tmp_path / "in.parquet")
    (tmp_path / "s.toml").write_text('format = "parquet"\nlabel = "y"\nnumeric = ["n"]\ncategorical = ["c"]\ndrop = ["junk"]\n')
    code, _, err = run_prepare(capsys, "--schema", tmp_path / "s.toml", "--input", tmp_path / "in.parquet",
                               "--output", tmp_path / "o")
    assert code == 0, err
    data = load_prepared(tmp_path / "o")
    assert data.field_names == ("n", "c")
    assert sum(data.metadata["rows"].values()) == rows
    assert data.field_dims[1] == 8  # v0..v6, each ~285 times, plus OOV
    assert data.metadata["label_rate"]["overall"] == pytest.approx(table["y"].to_numpy().mean())


def test_console_script_error_is_one_line_exit_2_and_progress_is_logged(shared_data, tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "ihas.cli", "prepare", "--preset", "criteo", "--output", str(tmp_path / "o")]
    proc = subprocess.run([*cmd, "--input", str(tmp_path / "missing.tsv")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"ihas prepare: error: {tmp_path / 'missing.tsv'}: file not found; "
                                                "check the --input path"]
    src = shared_data / "criteo-1tb-day0-10k" / "day_0.part.txt"
    proc = subprocess.run([*cmd, "--input", str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "INFO ihas.data.prepare: pass 1/2 (count): done, 10000 rows" in proc.stderr
    assert "pass 2/2 (encode): done" in proc.stderr
    assert proc.stdout.startswith(f"prepared {tmp_path / 'o'}")


def test_small_blocks_give_the_same_dataset_and_line_numbers(shared_data, tmp_path):
    """Blocks are cut at line ends: a block size far below the file size changes nothing."""
    from ihas.data.prepare import prepare
    from ihas.data.reader import CsvSource
    from ihas.data.schema import preset

    lines = criteo_lines(shared_data)
    lines[1234] = b"0\t1\n"
    lines[7776] = b"1\n"
    crlf = _write(tmp_path / "crlf.txt", [line.replace(b"\n", b"\r\n") for line in lines])
    big = CsvSource(crlf, preset("criteo"))
    small = CsvSource(crlf, preset("criteo"), block_size=50_000)  # about 200 lines per block
    meta_big = prepare(big, tmp_path / "big")
    meta_small = prepare(small, tmp_path / "small")
    assert [bad.number for bad in small.bad_lines] == [bad.number for bad in big.bad_lines] == [1235, 7777]
    assert meta_small["rows"] == meta_big["rows"]
    assert meta_small["field_dims"] == meta_big["field_dims"]
    assert meta_small["rejected"]["wrong_field_count"] == 2
    a, b = load_prepared(tmp_path / "big"), load_prepared(tmp_path / "small")
    for split in ("train", "valid", "test"):
        assert np.array_equal(a.split(split).x, b.split(split).x)


def test_a_bad_label_on_line_1_is_a_rejected_row_not_a_header(shared_data, tmp_path, capsys):
    lines = criteo_lines(shared_data)
    lines[0] = b"yes" + lines[0][1:]
    code, _, err = _criteo(capsys, _write(tmp_path / "l1.txt", lines), tmp_path / "out")
    assert code == 0, err
    assert load_prepared(tmp_path / "out").metadata["rejected"]["invalid_label"] == 1
