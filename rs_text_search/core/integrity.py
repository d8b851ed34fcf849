"""Is an index folder whole? What ``finalize`` records, and the checks made before an index is trusted.

``finalize`` records in meta.json the byte size and SHA-256 of ``index.faiss`` and ``ids.npy`` and the
catalog's tile counts. Before an index is searched (``TileIndex.verify``):

- cheap (listing the cache): meta.json complete, the two files present with their recorded sizes;
- deep (once per opened index, before its first search): both checksums (SHA-256 runs at about
  1.5 GB/s here, a third of a second for a million tiles' exact index), SQLite's ``quick_check`` of
  the catalog, and its counts per status equal to the recorded ones and to the grid.

A problem is one phrase (``"its file ids.npy is missing"``) that callers put into a sentence; the next
``index`` run of the raster rebuilds what the phrase names (``indexing.build_index``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from .model import file_sha256

__all__ = ["INDEX_FILES", "file_record", "index_problem", "catalog_problem", "repair_catalog"]

INDEX_FILES = ("index.faiss", "ids.npy")


def file_record(path: Path) -> dict:
    """``{"bytes": size, "sha256": hex}`` of a file."""
    return {"bytes": Path(path).stat().st_size, "sha256": file_sha256(path)}


def catalog_problem(connect: Callable[[], sqlite3.Connection], meta: dict, status: dict[str, int]) -> str | None:
    """What is wrong with a catalog (quick_check, counts against meta.json and the grid), or None."""
    try:
        with connect() as db:
            check = db.execute("PRAGMA quick_check(1)").fetchone()
            if check is None or check[0] != "ok":
                return "its catalog is damaged"
            rows = dict(db.execute("SELECT status, COUNT(*) FROM tiles GROUP BY status").fetchall())
    except sqlite3.DatabaseError:  # not a database, truncated, no tiles table
        return "its catalog is damaged"
    counts = meta.get("counts") or {}
    found = {name: int(rows.get(code, 0)) for name, code in status.items()}
    n_rows, n_cols = meta["grid_shape"]
    if sum(rows.values()) != n_rows * n_cols or (counts and found != counts):
        return f"its catalog holds {sum(rows.values())} of the {n_rows * n_cols} tiles it should"
    return None


def index_problem(directory: Path, meta: dict, connect: Callable[[], sqlite3.Connection], status: dict[str, int],
                  deep: bool) -> str | None:
    """Why a finished index cannot be trusted, as a phrase, or None when it can (see the module docstring)."""
    if not meta.get("complete"):
        return "its indexing is not finished"
    recorded = meta.get("files") or {}
    for name in INDEX_FILES:
        path = Path(directory) / name
        if not path.is_file():
            return f"its file {name} is missing"
        if name in recorded and path.stat().st_size != recorded[name]["bytes"]:
            return f"its file {name} has the wrong size"
    if not (Path(directory) / "catalog.sqlite").is_file():
        return "its catalog is missing"
    if not deep:
        return None
    for name in INDEX_FILES:
        if name in recorded and file_record(Path(directory) / name)["sha256"] != recorded[name]["sha256"]:
            return f"its file {name} does not match its checksum"
    return catalog_problem(connect, meta, status)


def repair_catalog(path: Path, n_tiles: int, embedding_bytes: int, status: dict[str, int]) -> str | None:
    """Make a catalog fit to resume from, before an ``index`` run; returns what was repaired, or None.

    A catalog SQLite cannot vouch for (not a database, truncated, failing quick_check) is removed, so every
    tile is embedded again; in one it can, rows that cannot be right (an embedding of the wrong size, a
    status or tile number out of range) are dropped and only those tiles are embedded again.
    """
    if not Path(path).is_file():
        return None
    try:
        db = sqlite3.connect(path, timeout=30)
        try:
            check = db.execute("PRAGMA quick_check(1)").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(check)
            with db:
                dropped = db.execute(
                    f"DELETE FROM tiles WHERE id < 0 OR id >= ? OR status NOT IN ({','.join('?' * len(status))}) "
                    "OR (status = ? AND (embedding IS NULL OR length(embedding) != ?))",
                    (n_tiles, *status.values(), status["embedded"], embedding_bytes)).rowcount
        finally:
            db.close()
    except sqlite3.DatabaseError:  # not a database, malformed, no tiles table: nothing in it is vouched for
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
            name.unlink(missing_ok=True)
        return "its catalog was damaged, so every tile is embedded again"
    return f"{dropped} damaged catalog rows are embedded again" if dropped else None
