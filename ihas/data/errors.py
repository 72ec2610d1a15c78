"""The one exception type of data preparation: its message is what the user sees."""

from __future__ import annotations


class DataError(Exception):
    """Input that cannot be prepared. The message names the file, the line or value, and the fix.

    The `ihas` CLI prints it as one line on stderr and exits with code 2, without a traceback.
    """
