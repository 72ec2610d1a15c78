"""Atomic file writes: readers see the old complete file or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(target: str | os.PathLike[str], write: Callable[[str], None], *, suffix: str = ".tmp") -> None:
    """Call `write(tmp_path)` on a temporary file beside `target`, then rename it over `target`.

    The temporary file is removed when `write` raises. `suffix` lets writers that pick a format by
    file ending (matplotlib's savefig) see the right one. The file gets mode 0o644, because
    `tempfile.mkstemp` creates it readable by its owner only.
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    atomic_write(target, lambda path: Path(path).write_text(text, encoding="utf-8"))
