"""MovieLens-100K: obtain the three RecBole atomic files and join them into one table.

The files ship inside the `recbole==1.2.1` wheel on PyPI. Without a local copy they are fetched
with `pip download` (the wheel only: recbole is neither installed nor imported), checked against
the sha256 values below, and cached in `$IHAS_CACHE_DIR/movielens-100k` or
`~/.cache/ihas/movielens-100k`. A local folder with the same three files works too.

Joined fields: user_id, item_id, age, gender, occupation, zip_code, release_year, genres. `genres`
is RecBole's `class` token_seq ("Animation Children's Comedy") kept whole as one categorical value.
The label is rating >= 4 (the preset's `label_threshold`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from ihas.data.errors import DataError
from ihas.data.reader import TableSource
from ihas.data.schema import Schema

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "recbole==1.2.1"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
WHEEL_DIR = "recbole/dataset_example/ml-100k/"
FILES = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}


def cache_dir() -> Path:
    root = os.environ.get("IHAS_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "ihas"
    return base / "movielens-100k"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(folder: Path) -> None:
    """Raise DataError unless the folder contains the three files with the expected sha256."""
    for name, expected in FILES.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} not found; the MovieLens-100K folder needs {', '.join(FILES)} "
                            "(omit --input to download them)")
        actual = _sha256(path)
        if actual != expected:
            raise DataError(f"{path}: sha256 {actual} does not match the expected {expected}; "
                            "the file is damaged or another version; delete it and omit --input to download it again")


def locate(input_path: str | Path | None) -> Path:
    """The folder with verified files: `input_path` (folder or one of its files), the cache, or a download."""
    if input_path is not None:
        path = Path(input_path)
        folder = path.parent if path.is_file() else path
        if not folder.is_dir():
            raise DataError(f"{path} not found; pass the folder with {', '.join(FILES)} or omit --input to download them")
        verify(folder)
        return folder
    folder = cache_dir()
    if all((folder / name).is_file() for name in FILES):
        try:
            verify(folder)
            log.info("MovieLens-100K: using the cached files in %s", folder)
            return folder
        except DataError as exc:
            log.warning("MovieLens-100K cache is damaged (%s); downloading again", exc)
    download(folder)
    return folder


def download(folder: Path) -> None:
    """Fetch the recbole wheel with pip (not installed, not imported), verify, extract the files into `folder`."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ihas-ml100k-") as tmp_text:
        tmp = Path(tmp_text)
        log.info("MovieLens-100K: downloading the %s wheel with pip", WHEEL_REQUIREMENT)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--quiet", WHEEL_REQUIREMENT, "-d", str(tmp / "wheel")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted((tmp / "wheel").glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
            raise DataError(f"downloading {WHEEL_REQUIREMENT} with pip failed ({detail[0]}); check the network or "
                            "pass --input FOLDER with ml-100k.inter, ml-100k.user and ml-100k.item")
        wheel = wheels[0]
        actual = _sha256(wheel)
        if actual != WHEEL_SHA256:
            raise DataError(f"{wheel.name}: sha256 {actual} does not match the expected {WHEEL_SHA256}; "
                            "the package index served another file; do not use it")
        staging = tmp / "files"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as zf:
            for name in FILES:
                (staging / name).write_bytes(zf.read(WHEEL_DIR + name))
        verify(staging)
        # Install into the cache atomically: a whole folder or none.
        partial = Path(tempfile.mkdtemp(prefix=".movielens-100k.tmp-", dir=folder.parent))
        for name in FILES:
            shutil.move(str(staging / name), partial / name)
        if folder.exists():
            shutil.rmtree(folder)
        partial.chmod(0o755)
        os.rename(partial, folder)
    log.info("MovieLens-100K: cached in %s", folder)


def _read_atomic(path: Path) -> pd.DataFrame:
    """A RecBole atomic file (TSV, `name:type` headers) as strings, with the `:type` suffixes stripped."""
    with open(path, encoding="utf-8") as fh:
        names = [name.split(":", 1)[0] for name in fh.readline().rstrip("\r\n").split("\t")]
    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                           parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
                           convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                                strings_can_be_null=False, null_values=[]))
    return table.to_pandas()


def joined_table(folder: Path) -> pa.Table:
    """Ratings left-joined with user and item attributes, in the order of ml-100k.inter."""
    inter = _read_atomic(folder / "ml-100k.inter")[["user_id", "item_id", "rating"]]
    user = _read_atomic(folder / "ml-100k.user")[["user_id", "age", "gender", "occupation", "zip_code"]]
    item = _read_atomic(folder / "ml-100k.item")[["item_id", "release_year", "class"]].rename(columns={"class": "genres"})
    joined = inter.merge(user, on="user_id", how="left", validate="many_to_one")
    joined = joined.merge(item, on="item_id", how="left", validate="many_to_one").fillna("")
    return pa.Table.from_pandas(joined, preserve_index=False)


def movielens_source(schema: Schema, input_path: str | Path | None) -> TableSource:
    folder = locate(input_path)
    paths = tuple(folder / name for name in FILES)
    return TableSource(joined_table(folder), schema, paths=paths, description=f"MovieLens-100K in {folder}")
