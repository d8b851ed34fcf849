"""Where indexes live on disk, how they are keyed, and atomic file writes.

The cache is outside the plugin folder (a plugin update wipes that folder): ``$RS_TEXT_SEARCH_CACHE``
when set, else the platform's user cache directory. One index folder per
(raster identity, model, tile grid): the folder name is a hash of that key, so an index made by
another model or grid is never picked up by mistake.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["cache_root", "index_key", "atomic_write_bytes", "atomic_write_json", "atomic_path"]

CACHE_ENV = "RS_TEXT_SEARCH_CACHE"
APP_NAME = "rs_text_search"


def cache_root() -> Path:
    """The user's cache folder for rs_text_search (created when missing)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        root = Path(override).expanduser()
    elif sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / APP_NAME / "cache"
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches" / APP_NAME
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / APP_NAME
    root.mkdir(parents=True, exist_ok=True)
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
            os.replace(self.tmp, self.target)
        else:
            for leftover in self.tmp.parent.glob(self.tmp.name + "*"):
                leftover.unlink(missing_ok=True)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(target: Path, payload: dict) -> None:
    atomic_write_bytes(target, json.dumps(payload, indent=2, sort_keys=True).encode("utf-8"))
