"""Files written whole or not at all: a crash or kill mid-write leaves the previous version."""
from __future__ import annotations

import os


def write_atomically(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes `data` beside `path`, then renames it over `path` (atomic on POSIX)."""
    partial = f"{os.fspath(path)}.partial"
    if isinstance(data, bytes):
        with open(partial, "wb") as f:
            f.write(data)
    else:
        with open(partial, "w", encoding="utf-8") as f:
            f.write(data)
    os.replace(partial, path)
