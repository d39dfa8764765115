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
(`staged_directory`). Folders that many processes fill and poll (the prepared-data cache) are
published whole (`published_directory`: renamed into place, or uploaded with their marker file
last) and read back through a local copy kept once per host (`mirrored`).
"""
from __future__ import annotations

import contextlib
import glob as glob_lib
import hashlib
import json
import math
import os
import shutil
import tempfile
from typing import Any, BinaryIO, Iterator

from etils import epath
from etils.epath import backend

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


def _filesystem(url: str):  # an fsspec.AbstractFileSystem
    _check_backend(url)
    return backend.fsspec_backend.fs(url)


def _forget_clients() -> None:
    """Drops the clients epath cached: an object-store client is not fork-safe (fsspec refuses
    to use one in a forked child), and preparation forks workers that read the corpus."""
    # pylint: disable-next=protected-access
    backend.fsspec_backend._get_filesystem.cache_clear()


os.register_at_fork(after_in_child=_forget_clients)


def glob(pattern: str) -> list[epath.Path]:
    """The files and folders matching `pattern` (*, ?, [...], and ** across folders), sorted."""
    if not is_remote(pattern):
        return [path(m) for m in sorted(glob_lib.glob(pattern, recursive=True))]
    scheme = pattern.split("://", 1)[0]
    return sorted(path(f"{scheme}://{m}") for m in _filesystem(pattern).glob(pattern))


def fresh(location: PathLike) -> epath.Path:
    """`path(location)`, with this process's cached listings of a remote store dropped, so that
    what other processes wrote since is seen (gcsfs caches folder listings indefinitely)."""
    text = os.fspath(location)
    if is_remote(text):
        _filesystem(text).invalidate_cache()
    return path(text)


def fingerprint(location: PathLike) -> tuple[str, int, int | str]:
    """(location, size, version) of a file: cheap, and changes whenever its content does. The
    version is the modification time in ns of a local file, the checksum (or generation, or
    ETag) an object store keeps of an object."""
    text = os.fspath(location)
    if not is_remote(text):
        stat = os.stat(text)
        return text, stat.st_size, stat.st_mtime_ns
    info = _filesystem(text).info(text)
    for key in ("md5Hash", "crc32c", "generation", "ETag", "etag", "mtime", "LastModified",
                "updated"):
        if info.get(key):
            return text, int(info["size"]), str(info[key])
    raise ValueError(f"{text}: the store reports no version of this object (keys {sorted(info)})")


def sha256(location: PathLike) -> str:
    """The hex SHA-256 of a file's bytes, read in 16 MB blocks (what a run's fingerprint
    records of its data files: unlike a modification time it survives a copy)."""
    digest = hashlib.sha256()
    with open_binary(location) as f:
        for block in iter(lambda: f.read(16 * 2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def size(location: PathLike) -> int:
    text = os.fspath(location)
    return os.path.getsize(text) if not is_remote(text) else int(_filesystem(text).size(text))


def open_binary(location: PathLike) -> BinaryIO:
    """The file for reading bytes, buffered and seekable (an object is read in ranges)."""
    text = os.fspath(location)
    return open(text, "rb") if not is_remote(text) else _filesystem(text).open(text, "rb")


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


@contextlib.contextmanager
def published_directory(location: PathLike, *, marker: str) -> Iterator[str]:
    """A local folder to fill that appears at `location`, whole, when the block ends without
    error, for readers that take the file `marker` in it to mean "complete".

    Locally the folder is a sibling renamed onto `location` (atomic); if another process
    published `location` first, its copy is kept (callers publish the same content under the
    same name). Remotely the files are uploaded with `marker` last: an upload cut short leaves
    objects but no marker, which readers ignore and a rerun overwrites.
    """
    if is_remote(location):
        with tempfile.TemporaryDirectory(prefix="bert-upload-") as scratch:
            yield scratch
            _copy_tree(epath.Path(scratch), path(location), last=marker)
        return
    final = os.fspath(location)
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".partial-{os.path.basename(final)}-", dir=parent)
    try:
        yield scratch
        try:
            os.rename(scratch, final)
        except OSError:
            if not os.path.isfile(os.path.join(final, marker)):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def mirrored(location: PathLike, local_directory: PathLike, *, marker: str) -> str:
    """A local folder holding the files of the folder `location`, which holds `marker`.

    `location` itself when it is local; else `local_directory`, downloaded on first use
    (published as `published_directory` does, so that processes of one host share one copy)
    and reused after. The copy is never refreshed: callers name folders by their content.
    """
    if not is_remote(location):
        return os.fspath(location)
    local = os.fspath(local_directory)
    if not os.path.isfile(os.path.join(local, marker)):
        with published_directory(local, marker=marker) as scratch:
            _copy_tree(fresh(location), epath.Path(scratch))
    return local


def _copy_tree(source: epath.Path, destination: epath.Path, *, last: str | None = None) -> None:
    """Copies the folder `source` into `destination`; its file `last`, if any, after the rest."""
    destination.mkdir(parents=True, exist_ok=True)
    children = sorted(source.iterdir(), key=lambda child: child.name == last)
    for child in children:
        if child.is_dir():
            _copy_tree(child, destination / child.name)
        else:
            copy_file(child, destination / child.name)


def copy_file(source: PathLike, destination: PathLike) -> None:
    """Copies one file, across storages (a backend's own copy assumes both ends are its own)."""
    with path(source).open("rb") as reader, path(destination).open("wb") as writer:
        shutil.copyfileobj(reader, writer, 16 * 2**20)


def json_object(text: str, where: object, error: type[ValueError] = ValueError, *,
                line: int | None = None) -> dict[str, Any]:
    """`text` parsed as a JSON object. Bad JSON or another kind of value raises `error` naming
    `where` and the line: `line` for one line of a JSON-lines file, else where parsing failed."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{where}:{line or e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise error(f"{where}{f':{line}' if line else ''}: expected a JSON object")
    return value


def decode_error(where: object, data: bytes, error: UnicodeDecodeError, encoding: str) -> str:
    """"FILE:LINE: not valid ENCODING (byte 0x.. at byte offset N of the file, column C of the
    line)", for `error` raised decoding the whole of `data`, the bytes of the file `where`."""
    start = error.start
    line = data.count(b"\n", 0, start) + 1
    column = start - (data.rfind(b"\n", 0, start) + 1) + 1
    return (f"{where}:{line}: not valid {encoding} (byte 0x{data[start]:02x} at byte offset "
            f"{start} of the file, column {column} of the line)")


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def strict_json(value: Any, **dumps_options: Any) -> str:
    """`json.dumps(value)` as strict JSON: NaN and infinities (which json writes as the bare
    words NaN and Infinity, that JSON parsers other than Python's refuse) become null."""
    return json.dumps(_strict(value), allow_nan=False, **dumps_options)
