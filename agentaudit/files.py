"""Writing small files that must never be seen half-written or readable by others."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` whole: a reader sees the old file or the new one.

    mkstemp creates the temporary file 0600 (O_EXCL), so a secret is never readable by others,
    not even before the mode is set; the file and its directory are fsynced."""
    parent = path.parent  # once: a pathlib `parent` costs ~6k instructions (a new key per subject)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int = 0o700) -> None:
    """`mkdir -p path`, each directory it creates made durable in its parent: a file fsynced
    in a new directory is lost with that directory if the directory's own entry is not."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    # `path` exists now; each missing directory's parent is `path` or the one made before it
    # (the `.parent`s the loop above computed, not computed again).
    for made in reversed(missing):
        made.mkdir(mode=mode, exist_ok=True)  # exist_ok: another process may make it first
        fsync_dir(path)
        path = made
