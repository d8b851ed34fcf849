"""Is an index folder whole? What ``finalize`` records, and the checks made before an index is trusted.

``finalize`` records in meta.json the byte size and SHA-256 of ``index.faiss`` and ``ids.npy`` and the
catalog's tile counts. Before an index is searched (``TileIndex.verify``):

- cheap (listing the cache): meta.json complete, the two files present with their recorded sizes;
- deep (once per opened index, before its first search): both checksums, the catalog's header (a
  SQLite file whose size is the page count it records) and its tile count against meta.json and the
  grid. Measured on 100,000 tiles of 384 dimensions (147 MiB index.faiss, 198 MiB catalog, warm page
  cache, 2 shared cores): 131 ms, less than reading index.faiss itself takes (156 ms);
- trusted again (a search over many indexes, ``TileIndex.open``/``problem`` given the record a merged index
  keeps of each member): when none of the folder's files (meta.json, index.faiss, ids.npy, catalog.sqlite)
  changed since its deep checks last passed, by their stamps (size, mtime, ctime and inode; a write, a
  replacement or a copy changes one of them, and ctime cannot be set back the way mtime can), the deep
  checks are not made again and the recorded meta.json stands for the file: a stat of four files instead of
  a checksum and a catalog query (4.4 ms a member, most of it opening SQLite: 53 s at 10,000 rasters).
  What this gives up: bytes changed with every stamp left as it was, which only a write below the file
  system makes (a failing disk), or one in the same clock tick as the check that stamped it; such a file is
  checked in full again as soon as any stamp changes, and by the next ``index`` of its raster;
- thorough (``index`` over a finished index): also SQLite's ``quick_check`` (348 ms in all there: it
  reads the whole catalog, so searches leave it to ``index``; a search that still meets a damaged
  page says so in one sentence, and the next ``index`` rebuilds the catalog).

A problem is one phrase (``"its file ids.npy is missing"``) that callers put into a sentence; the next
``index`` run of the raster rebuilds what the phrase names (``indexing.build_index``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from .errors import IndexDamagedError
from .model import file_sha256

__all__ = ["INDEX_FILES", "STAMPED_FILES", "file_record", "file_stamp", "folder_stamps", "unchanged_since",
           "index_problem", "catalog_problem", "repair_catalog"]

INDEX_FILES = ("index.faiss", "ids.npy")
STAMPED_FILES = ("meta.json", *INDEX_FILES, "catalog.sqlite")  # meta.json first: TileIndex keeps its stamp alone


def file_stamp(path: str | Path) -> list[int] | None:
    """``[size, mtime_ns, ctime_ns, inode]`` of a file (what tells it changed without reading it), None when absent."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def folder_stamps(directory: str | Path) -> list[list[int] | None]:
    """The stamps of an index folder's ``STAMPED_FILES``."""
    return [file_stamp(os.path.join(directory, name)) for name in STAMPED_FILES]


def unchanged_since(directory: str | Path, stamps: list | None) -> bool:
    """Whether every one of an index folder's files is there with the stamps recorded when it was verified."""
    return bool(stamps) and None not in stamps and folder_stamps(directory) == stamps


def file_record(path: Path) -> dict:
    """``{"bytes": size, "sha256": hex}`` of a file."""
    return {"bytes": Path(path).stat().st_size, "sha256": file_sha256(path)}


def _header_problem(path: Path) -> str | None:
    """A SQLite file's header against its size (https://www.sqlite.org/fileformat.html, section 1.3): the
    magic string, and the page count times the page size, where the header vouches for its page count."""
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or header[:16] != b"SQLite format 3\x00":
        return "its catalog is damaged"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    change_counter, page_count, valid_for = (int.from_bytes(header[i : i + 4], "big") for i in (24, 28, 92))
    wal = Path(f"{path}-wal")
    settled = not wal.exists() or wal.stat().st_size == 0  # a WAL with frames in it may hold newer pages
    if settled and valid_for == change_counter and page_count * page_size != Path(path).stat().st_size:
        return "its catalog is damaged (truncated)"
    return None


def catalog_problem(connect: Callable[[], sqlite3.Connection], path: Path, meta: dict,
                    thorough: bool = False) -> str | None:
    """What is wrong with a catalog (header, tile count against meta.json and the grid; ``thorough``: also
    SQLite's quick_check), or None."""
    problem = _header_problem(path)
    if problem:
        return problem
    try:
        with connect() as db:
            if thorough:
                check = db.execute("PRAGMA quick_check(1)").fetchone()
                if check is None or check[0] != "ok":
                    return "its catalog is damaged"
            total = int(db.execute("SELECT COUNT(*) FROM tiles").fetchone()[0])
    except (sqlite3.DatabaseError, IndexDamagedError):  # not a database, malformed, no tiles table
        return "its catalog is damaged"
    n_rows, n_cols = meta["grid_shape"]
    recorded = sum((meta.get("counts") or {}).values())
    if total != n_rows * n_cols or (recorded and total != recorded):
        return f"its catalog holds {total} of the {n_rows * n_cols} tiles it should"
    return None


def index_problem(directory: Path, meta: dict, connect: Callable[[], sqlite3.Connection], deep: bool,
                  thorough: bool = False) -> str | None:
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
    if not (deep or thorough):
        return None
    for name in INDEX_FILES:
        if name in recorded and file_record(Path(directory) / name)["sha256"] != recorded[name]["sha256"]:
            return f"its file {name} does not match its checksum"
    return catalog_problem(connect, Path(directory) / "catalog.sqlite", meta, thorough)


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
