"""Which indexes in the cache can be searched, and one reason for each that cannot.

An index is skipped when it fails its checks (``core.integrity``: unfinished, a file missing or
damaged, a catalog that disagrees) or, before a search, when its raster file moved or changed since
it was indexed: a changed file's new index would otherwise be searched beside the stale one (every
tile twice), and a moved file's tiles exported with a path that no longer exists. A finished index removes
those it supersedes (``remove_superseded``), found through a register of which indexes each file has.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_root
from .errors import IndexMismatchError
from .index import META_VERSION, TileIndex, meta_version
from .merged import verified_members

__all__ = ["SkippedIndex", "scan_indexes", "check_index", "raster_change", "remove_superseded"]

# Beside the indexes folder: ``<entry>/<index key>`` (empty files) lists the indexes of each raster file path
# (``path-<hash>``) and of each file's bytes wherever it is (``file-<hash>``); ``remove_superseded`` fills it.
RASTERS_DIR = "rasters"
_REGISTER_FILLED = ".filled"
_UNREADABLE = "its meta.json cannot be read"
_OTHER_VERSION = "it was made by another version of rs_text_search"


@dataclass(frozen=True)
class SkippedIndex:
    """An index folder that is not searched, and why (``reason`` is a phrase)."""

    directory: Path
    raster_name: str | None  # None: its meta.json cannot be read
    reason: str
    raster_uri: str | None = None

    @property
    def what(self) -> str:
        return f"the index of '{self.raster_name}'" if self.raster_name else f"the index in '{self.directory}'"

    def sentence(self) -> str:
        return f"Skipping {self.what}: {self.reason}."


def raster_change(index: TileIndex) -> str | None:
    """Why a file raster's index no longer describes the file (moved, deleted, changed), or None."""
    identity = index.meta["raster"].get("identity") or {}
    if "path" not in identity:
        return None  # an online layer (XYZ, WMS): nothing on disk to compare
    try:
        stat = os.stat(identity["path"])
    except OSError:
        return f"its raster is no longer at '{identity['path']}'; index it where it is now"
    if stat.st_size != identity.get("size_bytes") or stat.st_mtime_ns != identity.get("mtime_ns"):
        return "its raster file changed after it was indexed; index it again"
    return None


def scan_indexes(root: Path | None = None, model_sha256: str | None = None, deep: bool = False,
                 check_rasters: bool = False) -> tuple[list[TileIndex], list[SkippedIndex]]:
    """Usable indexes in the cache (optionally one model's) and the skipped ones with the reason.

    deep: verify checksums and catalogs (``TileIndex.verify``), as before a search, except for indexes whose
    files did not change since a merged index in the cache recorded them verified; else the cheap checks.
    check_rasters: skip indexes of raster files that moved or changed since (a search would otherwise
    return a changed file's tiles twice, or tiles of a file that is gone).
    """
    folder = (root or cache_root(create=False)) / "indexes"
    verified = verified_members(folder.parent / "merged") if deep else {}
    found, skipped = [], []
    for directory in sorted(p for p in folder.glob("*") if p.is_dir()) if folder.is_dir() else []:
        if not (directory / "meta.json").is_file():
            if (directory / "catalog.sqlite").is_file():  # an empty folder is an indexer starting
                skipped.append(SkippedIndex(directory, None, "its meta.json is missing; index the raster again "
                                                             "to rebuild it"))
            continue
        checked = check_index(directory, model_sha256, deep, check_rasters, verified.get(directory.name))
        if isinstance(checked, TileIndex):
            found.append(checked)
        elif checked is not None:
            skipped.append(checked)
    return found, skipped


def check_index(directory: Path, model_sha256: str | None = None, deep: bool = False,
                check_rasters: bool = False, verified: dict | None = None) -> TileIndex | SkippedIndex | None:
    """One index folder, checked as ``scan_indexes`` checks each: the usable index, why it is skipped, or None
    for another model's index (``model_sha256``). ``verified``: its record in a merged index (``TileIndex.open``)."""
    try:
        index = TileIndex.open(directory, verified)
        if model_sha256 and index.meta["model"]["sha256"] != model_sha256:
            return None
        name, uri = index.raster_name, index.raster_uri
        problem = index.problem(deep) or (raster_change(index) if check_rasters else None)
    except (IndexMismatchError, KeyError, TypeError, AttributeError, ValueError):
        other = meta_version(directory) not in (None, META_VERSION)
        return SkippedIndex(directory, None, f"{_OTHER_VERSION if other else _UNREADABLE}; index the raster again "
                                             "to rebuild it")
    if problem is None:
        return index
    if problem.startswith("its raster"):
        return SkippedIndex(directory, name, problem, uri)
    return SkippedIndex(directory, name, f"{problem}; index the raster again to rebuild it", uri)


def remove_superseded(index: TileIndex) -> list[Path]:
    """Remove the indexes ``index`` replaces (same model, grid and bands): those of earlier versions of its
    raster file (same path, another size or mtime), and those of the same file at a path where it no longer
    is (moved: same size, mtime and header). Returns the folders removed.

    Candidates come from the register (``RASTERS_DIR``), not from reading every meta.json in the cache: that
    grew with the cache (an O(N^2) walk over 10,000 rasters); each candidate's meta.json still decides.
    """
    identity = index.meta["raster"].get("identity") or {}
    if "path" not in identity:
        return []
    register = _register(index.directory.parent)
    entries = [register / name for name in _register_names(identity)]
    for entry in entries:  # this index first, so a run finishing at the same time finds it
        entry.mkdir(parents=True, exist_ok=True)
        (entry / index.directory.name).touch()
    removed = []
    for marker in {m for entry in entries for m in entry.iterdir() if m.name != index.directory.name}:
        folder = index.directory.parent / marker.name
        if not folder.is_dir():
            marker.unlink(missing_ok=True)  # removed since (superseded, rebuilt, deleted by hand)
            continue
        other = _superseded_identity(index, identity, folder / "meta.json")
        if other is not None:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            for name in _register_names(other):
                (register / name / folder.name).unlink(missing_ok=True)
    return removed


def _superseded_identity(index: TileIndex, identity: dict, meta_path: Path) -> dict | None:
    """The raster identity in ``meta_path`` when ``index`` supersedes that index, else None."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        other = meta["raster"]["identity"]
        comparable = (other.get("bands") == identity.get("bands") and meta["grid"] == index.meta["grid"]
                      and meta["model"]["sha256"] == index.meta["model"]["sha256"])
        older = other.get("path") == identity["path"] and other != identity
        moved = not os.path.exists(other["path"]) and all(
            other.get(k) == identity.get(k) for k in ("size_bytes", "mtime_ns", "header_sha256"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return other if comparable and (older or moved) else None


def _register_names(identity: dict) -> list[str]:
    """The register's entries of a raster file: one for its path, one for its bytes (size, mtime, header)."""
    content = [identity.get(k) for k in ("size_bytes", "mtime_ns", "header_sha256")]
    return [f"path-{_digest(identity['path'])}", f"file-{_digest(content)}"]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:24]


def _register(indexes: Path) -> Path:
    """The register beside ``indexes``, filled from every meta.json there the first time (a cache made
    before the register: one walk, once)."""
    register = indexes.parent / RASTERS_DIR
    if (register / _REGISTER_FILLED).is_file():
        return register
    for meta_path in indexes.glob("*/meta.json"):
        try:
            other = json.loads(meta_path.read_text(encoding="utf-8"))["raster"]["identity"]
            names = _register_names(other) if "path" in other else []
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for name in names:
            (register / name).mkdir(parents=True, exist_ok=True)
            (register / name / meta_path.parent.name).touch()
    register.mkdir(parents=True, exist_ok=True)
    (register / _REGISTER_FILLED).touch()
    return register
