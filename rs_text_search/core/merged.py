"""One vector index over several rasters' indexes, so a query touches one faiss index, not one per raster.

A search over many rasters (a collection, every raster of a model, the plugin's project layers) visited
each raster's index in turn: a warm text query cost 36 ms over 252 small rasters against 6.5 ms for one
index of 100,000 tiles (issue 11), growing with the number of files. The per-raster indexes stay the
unit of indexing and resume; this module merges their vectors into one index of the engine's kind for
the total count (``vectors.build_faiss_index``), read from each member's catalog (the exact embeddings,
which a compressed faiss kind could not give back), never embedded again.

Folder layout (a collection's ``<cache>/collections/<name>/merged/``, else ``<cache>/merged/<key>/``
for an ad-hoc set of indexes, the few most recently used of which are kept)::

    index.faiss   the merged vectors; members side by side, each in its tile order
    tiles.npy     position -> tile index within its member (int64)
    members.json  written last: each member's index key, tile count and the sha256/size records of its
                  files (meta.json "files"); its meta.json and the stamps of its files when it last passed its
                  deep checks (``verified_members``); and the records of index.faiss and tiles.npy

Member ``m`` holds positions ``offsets[m]`` to ``offsets[m + 1]``. A merged index is reused while every
member searched is in it with the same file records (a re-indexed raster has a new key, a rebuilt index
new records); members left out of a search (damaged, stale, not asked for) are masked with a faiss
selector instead of rebuilding, as long as the searched ones hold at least half of its tiles.

Opening many indexes for a search costs a stat of each one's files, not their checks again: a member whose
files kept the stamps recorded here is opened from its recorded meta.json and not checked again
(``core.integrity``, trusted again); any other is checked in full, and its new stamps recorded once it passes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path

import numpy as np

from .cache import atomic_path, atomic_write_bytes
from .errors import IndexDamagedError
from .index import TileIndex
from .integrity import file_record, file_stamp
from .tiling import Window, window_corners
from .vectors import build_faiss_index, load_faiss_index, search_parameters

__all__ = ["MergedIndex", "MergedView", "merged_dir_for", "verified_members", "MERGED_VERSION"]

log = logging.getLogger(__name__)

MERGED_VERSION = 1
MERGED_FILES = ("index.faiss", "tiles.npy")
KEEP_AD_HOC = 4  # ad-hoc merged folders kept in <cache>/merged (most recently used first)
MIN_SEARCHED_SHARE = 0.5  # reuse a merged index with members left out while the searched ones hold this share
_OPEN: OrderedDict[str, MergedIndex] = OrderedDict()  # loaded merged indexes by folder: the plugin's next search
_OPEN_LOCK = threading.Lock()
_LAST_RECORD: tuple = (None, None, None)  # members.json last read: (path, stamp, record)


def merged_dir_for(members: Sequence[TileIndex]) -> Path:
    """The ad-hoc merged folder of a set of indexes: ``<cache>/merged/<hash of their keys>``."""
    digest = hashlib.sha256("\n".join(sorted({m.key for m in members})).encode()).hexdigest()[:24]
    return members[0].directory.parent.parent / "merged" / digest


def verified_members(folder: Path) -> dict[str, dict]:
    """Index key -> ``{"stamps", "meta"}`` of each member as it was when it last passed its deep checks, from the
    merged index in ``folder``, or from each one in it (``<cache>/merged``); empty when none can be read (then
    every member is checked in full). For ``TileIndex.open``/``verify``."""
    folder = Path(folder)
    if (folder / "members.json").is_file():
        records = [folder]
    else:
        records = sorted(p.parent for p in folder.glob("*/members.json"))
    found = {}
    for directory in records:
        try:
            found.update({m["key"]: m for m in _read_record(directory)["members"] if m.get("stamps") and m.get("meta")})
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def _read_record(directory: Path) -> dict:
    """members.json, parsed once while the file keeps its stamp (read before a search, then by ``_load``)."""
    global _LAST_RECORD

    path = Path(directory) / "members.json"
    stamp = file_stamp(path)
    if _LAST_RECORD[:2] != (str(path), stamp) or stamp is None:
        _LAST_RECORD = (str(path), stamp, json.loads(path.read_text(encoding="utf-8")))
    return _LAST_RECORD[2]


def _write_record(directory: Path, record: dict) -> None:
    """members.json, compact (10,000 members' meta.json: a few MB parsed before each search of them)."""
    atomic_write_bytes(directory / "members.json", json.dumps(record, separators=(",", ":")).encode("utf-8"))


class MergedIndex:
    """A merged faiss index and its member map; ``for_members`` finds, loads or builds one."""

    def __init__(self, directory: Path, record: dict, faiss_index, tiles: np.ndarray) -> None:
        self.directory = Path(directory)
        self.record = record
        self.faiss = faiss_index
        self.tiles = tiles
        self.keys = [m["key"] for m in record["members"]]
        self.offsets = np.concatenate([[0], np.cumsum([m["tiles"] for m in record["members"]])]).astype(np.int64)

    @classmethod
    def for_members(cls, members: Sequence[TileIndex], directory: Path | None = None) -> MergedIndex:
        """A merged index over ``members`` (and maybe others, masked): the loaded one of ``directory``, else
        the one on disk there, else built from the members' catalogs and written there (kept in memory
        only where the cache cannot be written). ``directory`` None: ``merged_dir_for(members)``."""
        ad_hoc = directory is None
        directory = Path(directory or merged_dir_for(members))
        with _OPEN_LOCK:
            merged = _OPEN.get(str(directory))
            if merged is None or not merged.covers(members):
                merged = cls._load(directory, members) or cls._build(directory, members, ad_hoc)
            merged._record_stamps(members)
            _OPEN[str(directory)] = merged
            _OPEN.move_to_end(str(directory))
            while len(_OPEN) > KEEP_AD_HOC:
                _OPEN.popitem(last=False)
        return merged

    def covers(self, members: Sequence[TileIndex]) -> bool:
        """Whether every member is in this index unchanged, and they hold enough of it to mask the rest."""
        recorded = {m["key"]: m for m in self.record["members"]}
        if any(recorded.get(m.key, {}).get("files") != m.meta.get("files") for m in members):
            return False
        return sum(recorded[m.key]["tiles"] for m in members) >= MIN_SEARCHED_SHARE * max(1, len(self.tiles))

    def _record_stamps(self, members: Sequence[TileIndex]) -> None:
        """Record the stamps of members verified since (checked in full: a file of theirs was replaced, copied)."""
        recorded = {m["key"]: m for m in self.record["members"]}
        changed = [m for m in members if m.stamps and m.key in recorded and recorded[m.key].get("stamps") != m.stamps]
        for member in changed:
            recorded[member.key].update(stamps=member.stamps, meta=member.meta)
        if changed and "files" in self.record:  # "files": the record is on disk (else searched from memory)
            with suppress(OSError):
                _write_record(self.directory, self.record)

    # -- on disk -------------------------------------------------------------------------------------
    @classmethod
    def _load(cls, directory: Path, members: Sequence[TileIndex]) -> MergedIndex | None:
        try:
            record = _read_record(directory)
            if record.get("version") != MERGED_VERSION:
                return None
            for name in MERGED_FILES:  # written before members.json: a crash between leaves a mismatch here
                if file_record(directory / name) != record["files"][name]:
                    return None
            merged = cls(directory, record, load_faiss_index(directory / "index.faiss"),
                         np.load(directory / "tiles.npy", allow_pickle=False))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            return None
        if merged.faiss.ntotal != len(merged.tiles) or merged.offsets[-1] != len(merged.tiles):
            return None
        if not merged.covers(members):
            return None
        _touch(directory / "members.json")
        return merged

    @classmethod
    def _build(cls, directory: Path, members: Sequence[TileIndex], ad_hoc: bool) -> MergedIndex:
        """Merge the members' catalog embeddings (members in key order, each once, each in tile order)."""
        members = sorted({m.key: m for m in members}.values(), key=lambda m: m.key)
        counts = [int(m.meta["counts"]["embedded"]) for m in members]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        tiles = np.empty(int(offsets[-1]), dtype=np.int64)
        dim = int(members[0].meta["model"]["embed_dim"])

        def chunks():
            for slot, member in enumerate(members):
                filled = int(offsets[slot])
                for ids, vectors in member.embedded_chunks():
                    if filled + len(ids) > offsets[slot + 1]:
                        break
                    tiles[filled : filled + len(ids)] = ids
                    filled += len(ids)
                    yield vectors
                if filled != offsets[slot + 1]:
                    raise IndexDamagedError(member.damaged_sentence("its catalog disagrees with its meta.json on the "
                                                                    "number of embedded tiles"))

        log.info("merging %d indexes (%d tiles) into %s", len(members), len(tiles), directory)
        index = build_faiss_index(dim, len(tiles), chunks)
        record = {"version": MERGED_VERSION, "index_type": type(index).__name__,
                  "members": [{"key": m.key, "tiles": n, "files": m.meta.get("files"), "stamps": m.stamps,
                               "meta": m.meta if m.stamps else None} for m, n in zip(members, counts)]}
        merged = cls(directory, record, index, tiles)
        try:
            merged._write()
        except (OSError, RuntimeError) as exc:  # a cache this user cannot write: searched from memory
            log.info("the merged index is not kept on disk (%s)", exc)
        if ad_hoc:
            _prune(directory.parent, KEEP_AD_HOC)
        return merged

    def _write(self) -> None:
        import faiss

        with atomic_path(self.directory / "index.faiss") as tmp:
            faiss.write_index(self.faiss, str(tmp))
        with atomic_path(self.directory / "tiles.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, self.tiles)
        self.record["files"] = {name: file_record(self.directory / name) for name in MERGED_FILES}
        _write_record(self.directory, self.record)


class MergedView:
    """A merged index as one search sees it: positions mapped to the searcher's members, the rest masked.

    Everything per member (slots, envelopes, CRS groups) is worked out here, once; a query then costs one
    faiss search plus, with a bounding box, catalog look-ups of the members whose envelope it meets.
    """

    def __init__(self, merged: MergedIndex, members: Sequence[TileIndex]) -> None:
        self.merged, self.members = merged, list(members)
        slot_of_key = {key: slot for slot, key in enumerate(merged.keys)}
        self.slots = np.array([slot_of_key[m.key] for m in self.members], dtype=np.int64)
        self.member_of_slot = np.full(len(merged.keys), -1, dtype=np.int64)
        self.member_of_slot[self.slots] = np.arange(len(self.members))
        self._mask_selector = None
        if (self.member_of_slot < 0).any():  # members left out of this search: a bitmap of the searched positions
            searched = np.repeat(self.member_of_slot >= 0, np.diff(merged.offsets))
            self._mask_bits = np.packbits(searched, bitorder="little")
            self._mask_selector = _bitmap_selector(len(searched), self._mask_bits)
        self._crs_groups: dict[str | None, tuple[np.ndarray, np.ndarray]] = {}
        by_crs: dict[str | None, list[int]] = {}
        for number, member in enumerate(self.members):
            by_crs.setdefault(member.crs_wkt, []).append(number)
        for crs, numbers in by_crs.items():
            self._crs_groups[crs] = (np.array(numbers, dtype=np.int64),
                                     np.array([_envelope(self.members[n]) for n in numbers], dtype=np.float64))

    def allowed_positions(self, bbox, bbox_crs: str | None, transform_bounds: Callable) -> np.ndarray:
        """Merged positions of the searched members' embedded tiles overlapping ``bbox`` (``bbox_crs``, or each
        raster's own CRS when None); the box is transformed once per distinct raster CRS."""
        found = []
        for crs, (numbers, envelopes) in self._crs_groups.items():
            box = bbox
            if bbox_crs and crs:
                box = transform_bounds(bbox, bbox_crs, crs)
                if not all(math.isfinite(v) for v in box):
                    continue  # the box has no place in this CRS
            meets = ((envelopes[:, 2] > box[0]) & (envelopes[:, 0] < box[2]) & (envelopes[:, 3] > box[1])
                     & (envelopes[:, 1] < box[3]))
            for number in numbers[meets]:
                tile_indexes = self.members[number].tiles_in_bounds(box)
                if len(tile_indexes):
                    slot = self.slots[number]
                    start, stop = self.merged.offsets[slot], self.merged.offsets[slot + 1]
                    in_member = np.searchsorted(self.merged.tiles[start:stop], tile_indexes)
                    keep = in_member < stop - start
                    keep[keep] = self.merged.tiles[start + in_member[keep]] == tile_indexes[keep]
                    found.append(start + in_member[keep])
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def members_under(self, x: float, y: float, crs: str | None,
                      transform_point: Callable) -> list[tuple[int, float, float]]:
        """(member number, x, y in its CRS) of the searched members whose envelope holds a point given in ``crs``
        (None: each raster's own), in member order; the point is transformed once per distinct raster CRS."""
        found = []
        for group_crs, (numbers, envelopes) in self._crs_groups.items():
            px, py = transform_point(x, y, crs, group_crs) if crs and group_crs else (x, y)
            if not (math.isfinite(px) and math.isfinite(py)):
                continue  # the point has no place in this CRS
            holds = ((envelopes[:, 0] <= px) & (envelopes[:, 2] >= px) & (envelopes[:, 1] <= py)
                     & (envelopes[:, 3] >= py))
            found += [(int(number), px, py) for number in numbers[holds]]
        return sorted(found)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[float, int, int]]:
        """Best ``k`` hits of one query vector as (score, member number, tile index), best first.

        allowed: merged positions the search is restricted to (``allowed_positions``), None for every
        searched member's tiles.
        """
        import faiss

        index = self.merged.faiss
        selector, selected = self._mask_selector, None  # a mask leaves at least half the tiles: no wider scan
        if allowed is not None:
            selected = len(allowed)
            if len(allowed) == 0:
                return []
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        k_eff = min(k, index.ntotal)
        if k_eff == 0:
            return []
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one query: one faiss thread is faster (TileIndex.search says why)
        try:
            scores, positions = index.search(np.ascontiguousarray(query[None, :], dtype=np.float32), k_eff,
                                             params=search_parameters(index, selector, selected))
        finally:
            faiss.omp_set_num_threads(threads)
        positions = positions[0][positions[0] >= 0]
        slots = np.searchsorted(self.merged.offsets, positions, side="right") - 1
        members = self.member_of_slot[slots]
        return [(float(s), int(m), int(t)) for s, m, t in zip(scores[0], members, self.merged.tiles[positions])
                if m >= 0]


def _envelope(index: TileIndex) -> tuple[float, float, float, float]:
    """A raster's envelope in its own CRS (pixel coordinates without one), from its geotransform."""
    raster = index.meta["raster"]
    corners = np.array(window_corners(tuple(raster["transform"]), Window(0, 0, raster["width"], raster["height"])))
    return (*corners.min(axis=0), *corners.max(axis=0))


def _bitmap_selector(n: int, bits: np.ndarray):
    """A faiss selector of the positions whose bit is set in ``bits`` (little-endian; the caller keeps ``bits``)."""
    import faiss

    return faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))


def _touch(path: Path) -> None:
    with suppress(OSError):  # a read-only cache: its merged folders are not pruned by this user anyway
        path.touch()


def _prune(folder: Path, keep: int) -> None:
    """Keep the ``keep`` most recently used merged folders in ``folder`` (ad-hoc sets: each change of the set of
    indexes searched makes a new one, and the older ones are rebuilt from catalogs if ever needed again)."""
    def used(path: Path) -> float:
        try:
            return (path / "members.json").stat().st_mtime
        except OSError:
            return 0.0

    for old in sorted((p for p in folder.glob("*") if p.is_dir()), key=used, reverse=True)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
