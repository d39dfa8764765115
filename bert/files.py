"""One path layer for local disks and object storage (gs://, s3://, other fsspec URLs).

Every file this project reads or writes outside the data pipeline goes through `path()`, which
returns an etils.epath.Path (the layer orbax checkpoints already use): a local path behaves as
pathlib's, a URL goes to its fsspec backend (gs:// needs gcsfs: `pip install "bert-jax[gcs]"`).
Nothing here calls os.path on a URL, which would turn gs://bucket/x into ./gs:/bucket/x.

Files are written whole or not at all. Locally a file is written beside its target and renamed
over it (atomic on POSIX), so a crash or kill mid-write leaves the previous version. Object
stores have no rename, but an object becomes visible only when its upload completes, so there a
direct write has the same guarantee.

Libraries that only read or write local files (tokenizers, safetensors, torch) get a local copy
of a remote input (`local_copy`) or write into a local folder that is uploaded when they finish
(`staged_directory`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from etils import epath

PathLike = str | os.PathLike


def is_remote(location: PathLike) -> bool:
    """True for a URL with a scheme (gs://bucket/x), False for a local path."""
    return "://" in os.fspath(location)


def path(location: PathLike) -> epath.Path:
    """`location` as an epath.Path; a URL whose scheme has no installed backend is a ValueError
    naming the package to install, not an ImportError deep in a save."""
    text = os.fspath(location)
    if is_remote(text):
        _check_backend(text)
    return epath.Path(text)


def absolute(location: PathLike) -> epath.Path:
    """`path(location)`, made absolute when local (orbax wants absolute local paths)."""
    text = os.fspath(location)
    return path(text if is_remote(text) else os.path.abspath(text))


_BACKEND_PACKAGES = {"gs": "gcsfs (pip install 'bert-jax[gcs]')", "s3": "s3fs", "az": "adlfs"}


def _check_backend(url: str) -> None:
    import fsspec  # only for URLs: local runs need no fsspec

    scheme = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class("gcs" if scheme == "gs" else scheme)
    except (ImportError, ValueError) as error:
        package = _BACKEND_PACKAGES.get(scheme, f"the fsspec backend of {scheme}://")
        raise ValueError(f"{url}: reading or writing {scheme}:// needs {package} ({error})") from None


def write_atomically(location: PathLike, data: str | bytes) -> None:
    """Writes `data` to `location` whole or not at all (see the module docstring)."""
    target = path(location)
    raw = data if isinstance(data, bytes) else data.encode("utf-8")
    if is_remote(location):
        target.write_bytes(raw)
        return
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(raw)
    os.replace(partial, target)


def read_text(location: PathLike) -> str:
    return path(location).read_text(encoding="utf-8")


@contextlib.contextmanager
def local_copy(location: PathLike) -> Iterator[str]:
    """A local path holding `location` (a file or a folder): itself when local, else a
    temporary copy removed on exit."""
    if not is_remote(location):
        yield os.fspath(location)
        return
    source = path(location)
    if not source.exists():
        raise FileNotFoundError(f"{location} does not exist")
    with tempfile.TemporaryDirectory(prefix="bert-download-") as scratch:
        local = os.path.join(scratch, source.name)
        if source.is_dir():
            _copy_tree(source, epath.Path(local))
        else:
            copy_file(source, local)
        yield local


@contextlib.contextmanager
def staged_directory(location: PathLike) -> Iterator[str]:
    """A local folder to write `location`'s files into: itself (created) when local, else a
    temporary folder whose files are uploaded into `location` when the block ends without error
    (files already there and not rewritten are kept)."""
    if not is_remote(location):
        os.makedirs(location, exist_ok=True)
        yield os.fspath(location)
        return
    with _uploaded(location) as scratch:
        yield scratch


@contextlib.contextmanager
def new_directory(location: PathLike) -> Iterator[str]:
    """A local folder to fill that becomes `location` when the block ends without error, or
    nothing does. `location` must be absent or empty. Locally the folder is a sibling renamed
    onto it (atomic); remotely it is uploaded."""
    target = path(location)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{location} already exists and is not empty; choose a new folder")
    if is_remote(location):
        with _uploaded(location) as scratch:
            yield scratch
        return
    parent = os.path.dirname(os.path.abspath(location))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=os.path.basename(location) + ".partial-", dir=parent)
    try:
        yield scratch
        if os.path.isdir(location):
            os.rmdir(location)  # empty, checked above
        os.replace(scratch, location)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _uploaded(location: PathLike) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bert-upload-") as scratch:
        yield scratch
        _copy_tree(epath.Path(scratch), path(location))


def _copy_tree(source: epath.Path, destination: epath.Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for child in source.iterdir():
        if child.is_dir():
            _copy_tree(child, destination / child.name)
        else:
            copy_file(child, destination / child.name)


def copy_file(source: PathLike, destination: PathLike) -> None:
    """Copies one file, across storages (a backend's own copy assumes both ends are its own)."""
    with path(source).open("rb") as reader, path(destination).open("wb") as writer:
        shutil.copyfileobj(reader, writer, 16 * 2**20)
