"""Atomic file writes: the bytes go to a temporary file in the target's folder, which is flushed,
fsync'ed and renamed over the target. A crash or an exception at any point leaves the previous
file (or no file) in place, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Iterator

__all__ = ["atomic_open", "write_json_atomic", "remove_stale_temp_files", "check_writable_folder"]


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[Any]:
    """``with atomic_open(path, "w" or "wb") as f:`` — the file appears at ``path`` only when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; not every platform lets a folder be opened, which is harmless.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(data: Any, path: str, indent: int | None = 1) -> None:
    """Write ``data`` as JSON to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=indent)


def remove_stale_temp_files(directory: str, names) -> list:
    """Delete the temporary files :func:`atomic_open` left for ``names`` in ``directory`` when its process
    was killed mid-write (SIGKILL runs no cleanup): ``.<name>.<random>.tmp``. Returns the paths removed.
    Call it only where no other process is writing these files."""
    if not os.path.isdir(directory):
        return []
    prefixes = tuple(f".{name}." for name in names)
    removed = []
    for entry in os.listdir(directory):
        if entry.startswith(prefixes) and entry.endswith(".tmp"):
            path = os.path.join(directory, entry)
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def check_writable_folder(path: str) -> None:
    """Create the folder ``path`` if needed and write (then delete) a file in it; raises OSError when
    that fails, so that a long job learns it before it starts, not when it saves."""
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
        pass
