"""Compressed text input and atomic output.

Reading: plain, ``.gz``, ``.xz`` and ``.bz2`` files are opened transparently as
UTF-8 text; bytes that are not UTF-8 raise :class:`jxmc.errors.DataError` with
the line number.  Writing: every output file is written to a temporary file in
the same folder and moved into place with ``os.replace``, so a reader never sees
a half-written file.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import os
import tempfile
import zlib
from collections.abc import Iterator
from typing import IO, Any

from jxmc.errors import DataError

COMPRESSED_SUFFIXES = (".gz", ".xz", ".bz2")


def _opener(path: str):
    if path.endswith(".gz"):
        return gzip.open
    if path.endswith(".xz"):
        return lzma.open
    if path.endswith(".bz2"):
        return bz2.open
    return open


def find_file(folder: str | os.PathLike, stem: str) -> str | None:
    """Returns ``folder/stem`` or its compressed variant, whichever exists first."""
    for suffix in ("",) + COMPRESSED_SUFFIXES:
        p = os.path.join(os.fspath(folder), stem + suffix)
        if os.path.isfile(p):
            return p
    return None


def read_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yields ``(line_number, text)`` for each line (1-based, newline stripped).

    Raises:
      DataError: the file is missing, cannot be decompressed, or holds bytes that
        are not UTF-8 (reported with the line number).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(path, None, "file not found")
    if os.path.isdir(path):
        raise DataError(path, None, "is a folder, expected a file")
    lineno = 0
    try:
        with _opener(path)(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(path, lineno, f"bytes that are not UTF-8 ({e.reason} at byte {e.start})") from None
                yield lineno, text.rstrip("\r\n")
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise DataError(path, lineno + 1 if lineno else None, f"cannot read file: {e}") from None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Opens a temporary file next to ``path``; on success moves it onto ``path``.

    Compression follows the suffix of ``path`` (``.gz``, ``.xz``, ``.bz2``).  On
    any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    binary = "b" in mode
    try:
        opener = _opener(path)
        if opener is open:
            f = open(tmp, mode, encoding=None if binary else encoding)
        else:
            f = opener(tmp, mode if binary else mode.replace("t", "") + "t", encoding=None if binary else encoding)
        with f:
            yield f
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def read_json_object(path: str | os.PathLike, error: type[Exception], what: str) -> dict[str, Any]:
    """The JSON object in ``path``.

    Raises:
      error: (the caller's class, e.g. ``ModelError``) one line naming ``path``: the
        file cannot be read or parsed (``"<path>: unreadable <what>: <why>"``), or it
        holds another JSON value (``"<path>: not a <what> (a JSON list, expected an
        object)"``).
    """
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise error(f"{path}: unreadable {what}: {' '.join(str(e).split())}") from None
    if not isinstance(value, dict):
        raise error(f"{path}: not a {what} (a JSON {type(value).__name__}, expected an object)")
    return value
