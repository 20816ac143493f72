"""Atomic file writes: a reader never sees a half-written file, and a failed write leaves any
existing file as it was.

The data goes to a hidden temporary file in the target's folder (``.<name>.<random>.tmp``), is
flushed to disk, then renamed over the target in one step. A process killed mid-write can leave
the hidden temporary file behind, never a damaged target.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "current_umask"]

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    # os.umask can only be read by setting it, which briefly affects files other threads create.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; not every platform can open a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then move it onto ``path``.

    The folder must exist. The new file gets the usual permissions (``0o666`` less the umask).
    On any exception the temporary file is removed, ``path`` is left untouched and the exception
    propagates. Returns ``path``.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # mkstemp's 0o600 would hide the file from other users
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON (indent 2, sorted keys) to ``path`` atomically.

    The object is serialised before anything is written, so one that JSON cannot hold raises
    ``TypeError`` and leaves ``path`` as it was.
    """
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
