"""Where indexes live on disk, how they are keyed, and atomic file writes.

The cache is outside the plugin folder (a plugin update wipes that folder): ``$RS_TEXT_SEARCH_CACHE``
when set, else the platform's user cache directory. One index folder per
(raster identity, model, tile grid): the folder name is a hash of that key, so an index made by
another model or grid is never picked up by mistake.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import CacheError

__all__ = ["cache_root", "index_key", "atomic_write_bytes", "atomic_write_json", "atomic_path", "write_failure"]

CACHE_ENV = "RS_TEXT_SEARCH_CACHE"
APP_NAME = "rs_text_search"


def cache_root(create: bool = True) -> Path:
    """The user's cache folder for rs_text_search, created when missing unless ``create`` is false
    (reading: a cache that does not exist holds nothing). Raises CacheError when it cannot be created."""
    override = os.environ.get(CACHE_ENV)
    if override:
        root = Path(override).expanduser()
    elif sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / APP_NAME / "cache"
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches" / APP_NAME
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / APP_NAME
    if create:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"The cache folder '{root}' cannot be created ({exc.strerror}); set {CACHE_ENV} "
                             "to a folder you can write.") from None
    return root


def index_key(raster_identity: dict, model_sha256: str, grid: dict) -> str:
    """Hex key of an index: changes whenever the raster's pixels, the model or the grid change."""
    payload = {"raster": raster_identity, "model": model_sha256, "grid": grid}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


class atomic_path:  # noqa: N801 - used like open()
    """Context manager yielding a temporary path beside ``target``; renamed onto it only on success.

    >>> with atomic_path(Path("out.gpkg")) as tmp:   # write tmp with any library
    ...     write_somehow(tmp)
    """

    def __init__(self, target: Path) -> None:
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp" + self.target.suffix,
                                        dir=self.target.parent)
        os.close(handle)
        os.unlink(name)  # libraries such as GDAL refuse to overwrite an empty non-GeoPackage file
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                os.replace(self.tmp, self.target)
                return
            except OSError:
                self._remove_leftovers()
                raise
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        for leftover in self.tmp.parent.glob(self.tmp.name + "*"):  # with SQLite's -journal, -wal, -shm
            leftover.unlink(missing_ok=True)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(target: Path, payload: dict) -> None:
    atomic_write_bytes(target, json.dumps(payload, indent=2, sort_keys=True).encode("utf-8"))


def write_failure(what: str, folder: Path, exc: BaseException, error: type[Exception] = CacheError) -> Exception:
    """One sentence (an ``error``) for a failed write of ``what`` into ``folder``: SQLite, faiss and GDAL report
    a full disk in words of their own ("database or disk is full", "no such table"), so the free space decides."""
    try:
        full = shutil.disk_usage(folder if Path(folder).exists() else Path(folder).parent).free < 1 << 20
    except OSError:
        full = False
    if full or getattr(exc, "errno", None) == errno.ENOSPC or any(w in str(exc) for w in ("full", "No space left")):
        return error(f"Writing {what} failed: the disk holding '{folder}' is full; free some space and run "
                          "again (finished work is kept).")
    if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS) or "readonly" in str(exc):
        return error(f"Writing {what} failed: '{folder}' cannot be written; set {CACHE_ENV} to a folder "
                          "you can write.")
    reason = getattr(exc, "strerror", None) or str(exc).rstrip(".")
    return error(f"Writing {what} failed ({reason}).")
