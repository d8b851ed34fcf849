"""Queries over one or several indexed rasters: text, example tiles, positives and negatives.

Every index searched must come from the same model (scores are then comparable across
rasters); rasters may have different CRSs: a bounding box or a map point is given with its own
CRS and transformed to each raster's CRS. Coordinate transforms are injectable so the QGIS
plugin can use QGIS's own (``transform_bounds``/``transform_point``); headless, pyproj serves.

A query vector combines examples Rocchio-style: ``q = norm(mean(pos)) - w * norm(mean(neg))``,
re-normalised (``w`` = ``negative_weight``, 0.5 by default). Optional re-ranking is average query
expansion: the query is moved towards its ``expansion_k`` best tiles (weighted by score) and the
search repeated, which narrows the text-image modality gap on nearly every query we tried.

A search over more than one index runs on one merged vector index (``core.merged``): one faiss search per
query whatever the number of rasters, with the same results as searching each index and merging the hits
(up to exact ties); per raster, only the catalog rows of the hits (and, with a bounding box, of the rasters
it meets) are read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import IndexDamagedError, QueryError
from .index import TILE_ID_PATTERN, TileIndex
from .merged import MergedIndex, MergedView, merged_dir_for, verified_members
from .model import Model

__all__ = ["SearchResult", "Searcher", "pyproj_transform_bounds", "pyproj_transform_point", "check_crs",
           "check_bbox"]

Bounds = tuple[float, float, float, float]
BoundsTransform = Callable[[Bounds, str, str], Bounds]
PointTransform = Callable[[float, float, str, str], tuple[float, float]]


def check_crs(crs: str):
    """The pyproj CRS of a user's CRS string (EPSG:xxxx, WKT, PROJ); QueryError when it names none."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(crs)
    except CRSError:
        raise QueryError(f"'{crs}' is not a coordinate reference system; give one such as EPSG:4326.") from None


def check_bbox(bbox: Bounds, crs: str | None = None) -> Bounds:
    """A bounding box (minx, miny, maxx, maxy) as floats; QueryError for one that is empty, inverted or not
    finite, or (``crs`` geographic) whose latitudes are out of range: usually latitude given first."""
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise QueryError("The bounding box has a coordinate that is not a finite number.")
    if minx >= maxx or miny >= maxy:
        raise QueryError(f"The bounding box {minx:g} {miny:g} {maxx:g} {maxy:g} is empty or inverted; give MINX MINY "
                         "MAXX MAXY with MINX < MAXX and MINY < MAXY.")
    if crs and check_crs(crs).is_geographic and (abs(miny) > 90 or abs(maxy) > 90):
        raise QueryError(f"The bounding box's latitudes {miny:g} and {maxy:g} are outside -90 to 90; in {crs} give "
                         "longitude before latitude (MINLON MINLAT MAXLON MAXLAT).")
    return minx, miny, maxx, maxy


def pyproj_transform_bounds(bounds: Bounds, src_crs: str, dst_crs: str) -> Bounds:
    from pyproj import Transformer
    from pyproj.exceptions import ProjError

    transformer = Transformer.from_crs(check_crs(src_crs), check_crs(dst_crs), always_xy=True)
    try:
        box = tuple(transformer.transform_bounds(*bounds, densify_pts=21))
    except ProjError:
        box = (math.inf,) * 4
    return box


def pyproj_transform_point(x: float, y: float, src_crs: str, dst_crs: str) -> tuple[float, float]:
    from pyproj import Transformer
    from pyproj.exceptions import ProjError

    transformer = Transformer.from_crs(check_crs(src_crs), check_crs(dst_crs), always_xy=True)
    try:
        return tuple(transformer.transform(x, y, errcheck=True))
    except ProjError:
        return math.inf, math.inf


@dataclass(frozen=True)
class SearchResult:
    rank: int
    score: float
    tile_id: str
    raster: str  # path or URI
    raster_name: str
    window: tuple[int, int, int, int]  # col_off, row_off, width, height in raster pixels
    bounds: Bounds  # in the raster's CRS
    crs_wkt: str | None  # None: pixel coordinates
    corners_lonlat: list | None  # [[lon, lat] x 4] clockwise from top-left
    index_key: str = ""  # the index folder's name (raster + model + grid)
    corners: list | None = None  # [[x, y] x 4] in the raster's CRS, clockwise from top-left: the real footprint

    def to_dict(self) -> dict:
        return asdict(self)


class Searcher:
    """Search a set of indexes made by ``model``.

    Each index is verified first (``TileIndex.verify``, once per object; over several indexes, not again for
    those whose files did not change since their merged index recorded them verified); damaged ones are left
    out and ``skipped`` holds one sentence for each. When none is left, the first sentence is raised.
    ``merged_dir``: where the merged index of several indexes lives (a collection's folder); None: an
    ad-hoc folder in the cache named after the set of indexes (``core.merged``).
    """

    def __init__(self, model: Model, indexes: Sequence[TileIndex],
                 transform_bounds: BoundsTransform = pyproj_transform_bounds,
                 transform_point: PointTransform = pyproj_transform_point, merged_dir: Path | None = None) -> None:
        if not indexes:
            raise QueryError("Nothing is indexed yet; index a raster first.")
        self.indexes, self.skipped = [], []
        verified = {}
        if len(indexes) > 1 and not all(index.verified for index in indexes):
            verified = verified_members(merged_dir or merged_dir_for(indexes).parent)
        for index in indexes:
            index.check_model(model.sha256)
            try:
                index.verify(verified.get(index.key))
            except IndexDamagedError as exc:
                self.skipped.append(str(exc))
                continue
            self.indexes.append(index)
        if not self.indexes:
            raise IndexDamagedError(self.skipped[0])
        self.model = model
        self._transform_bounds = transform_bounds
        self._transform_point = transform_point
        self._merged_dir = merged_dir
        self._merged: MergedView | None = None
        self._by_key: dict[str, TileIndex] = {}  # tile id prefix -> index (the first one, as a scan in order finds)
        for index in self.indexes:
            self._by_key.setdefault(index.key[:8], index)

    # -- building query vectors ------------------------------------------------------------------
    def resolve_tile(self, tile_id: str) -> tuple[TileIndex, int]:
        if not TILE_ID_PATTERN.fullmatch(tile_id):
            example = self.indexes[0].tile_id(0)
            raise QueryError(f"{tile_id!r} is not a tile id; tile ids are written like '{example}' (index, row, "
                             "column, as the results show them).")
        index = self._by_key.get(tile_id[:8])
        tile_index = None if index is None else index.parse_tile_id(tile_id)
        if tile_index is not None:
            return index, tile_index
        raise QueryError(f"There is no tile '{tile_id}' in the indexed rasters.")

    def tile_vectors(self, tile_ids: Sequence[str]) -> np.ndarray:
        return np.concatenate([idx.vectors([t]) for idx, t in map(self.resolve_tile, tile_ids)]) if tile_ids \
            else np.zeros((0, self.model.embed_dim), np.float32)

    def text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        texts = [t.strip() for t in texts]
        if any(not t for t in texts):
            raise QueryError("The query is empty; type what to look for, e.g. 'parking lot with cars'.")
        return self.model.embed_texts(texts) if texts else np.zeros((0, self.model.embed_dim), np.float32)

    def query_vector(self, texts: Sequence[str] = (), tiles: Sequence[str] = (),
                     negative_texts: Sequence[str] = (), negative_tiles: Sequence[str] = (),
                     negative_weight: float = 0.5) -> np.ndarray:
        positive = np.concatenate([self.text_vectors(texts), self.tile_vectors(tiles)])
        if len(positive) == 0:
            raise QueryError("The query is empty; give a text or at least one example tile.")
        negative = np.concatenate([self.text_vectors(negative_texts), self.tile_vectors(negative_tiles)])
        query = _unit(positive.mean(axis=0))
        if len(negative):
            query = query - negative_weight * _unit(negative.mean(axis=0))
        return _unit(query)

    # -- searching -------------------------------------------------------------------------------
    def search(self, texts: Sequence[str] = (), tiles: Sequence[str] = (), negative_texts: Sequence[str] = (),
               negative_tiles: Sequence[str] = (), top_k: int = 10, min_score: float | None = None,
               bbox: Bounds | None = None, bbox_crs: str | None = None, rerank: bool = False,
               expansion_k: int = 5) -> list[SearchResult]:
        """The ``top_k`` best tiles for positives minus negatives, example tiles themselves excluded."""
        if top_k < 1:
            raise QueryError(f"top-k must be at least 1, got {top_k}.")
        if bbox is not None:
            bbox = check_bbox(bbox, bbox_crs)
        query = self.query_vector(texts, tiles, negative_texts, negative_tiles)
        exclude = set(tiles) | set(negative_tiles)
        hits = self._search_vector(query, top_k + len(exclude), bbox, bbox_crs)
        if rerank and hits:
            top = hits[:expansion_k]
            weights = np.array([max(score, 0.0) for score, *_ in top], np.float32)[:, None]
            neighbours = np.concatenate([index.vectors([t]) for _, index, t in top])
            query = _unit(query + (weights * neighbours).sum(axis=0) / max(float(weights.sum()), 1e-6))
            hits = self._search_vector(query, top_k + len(exclude), bbox, bbox_crs)
        return self._results(hits, top_k, min_score, exclude)

    def search_text(self, text: str, **kwargs) -> list[SearchResult]:
        return self.search(texts=[text], **kwargs)

    def similar(self, tile_ids: Sequence[str], **kwargs) -> list[SearchResult]:
        return self.search(tiles=list(tile_ids), **kwargs)

    def tile_at(self, x: float, y: float, crs: str | None = None) -> str:
        """Id of the tile under a point; ``crs`` is any CRS string (EPSG:xxxx, WKT), None = each raster's.

        Over several rasters only those whose envelope holds the point look in their catalog."""
        if len(self.indexes) > 1:
            candidates = self.merged.members_under(x, y, crs, self._transform_point)
        else:
            candidates, index = [], self.indexes[0]
            px, py = self._transform_point(x, y, crs, index.crs_wkt) if crs and index.crs_wkt else (x, y)
            if math.isfinite(px) and math.isfinite(py):  # else the point has no place in this raster's CRS
                candidates.append((0, px, py))
        for number, px, py in candidates:
            index = self.indexes[number]
            tile_index = index.tile_containing(px, py)
            if tile_index is not None:
                return index.tile_id(tile_index)
        raise QueryError(f"No indexed tile lies under the point ({x}, {y}).")

    @property
    def merged(self) -> MergedView:
        """The merged vector index of the searched indexes (found, loaded or built on first use)."""
        if self._merged is None:
            self._merged = MergedView(MergedIndex.for_members(self.indexes, self._merged_dir), self.indexes)
        return self._merged

    def _search_vector(self, query: np.ndarray, k: int, bbox: Bounds | None, bbox_crs: str | None):
        if len(self.indexes) > 1:
            allowed = None if bbox is None else self.merged.allowed_positions(bbox, bbox_crs, self._transform_bounds)
            hits = self.merged.search(query, k, allowed)
            return [(score, self.indexes[member], tile) for score, member, tile in hits]
        hits = []
        for index in self.indexes:
            allowed = None
            if bbox is not None:
                box = bbox
                if bbox_crs and index.crs_wkt:
                    box = self._transform_bounds(bbox, bbox_crs, index.crs_wkt)
                    if not all(math.isfinite(v) for v in box):
                        continue  # the box has no place in this raster's CRS
                allowed = index.tiles_in_bounds(box)
                if len(allowed) == 0:
                    continue
            scores, tile_indexes = index.search(query[None, :], k, allowed)
            hits += [(float(s), index, int(t)) for s, t in zip(scores[0], tile_indexes[0]) if t >= 0]
        hits.sort(key=lambda hit: -hit[0])
        return hits

    def _results(self, hits, top_k, min_score, exclude) -> list[SearchResult]:
        """The ``top_k`` hits kept as results; their catalog rows are read once per raster (one connection for
        all of its hits: opening a catalog costs about as much as reading ten rows from it)."""
        kept = []
        for score, index, tile_index in hits:
            if min_score is not None and score < min_score:
                break
            if index.tile_id(tile_index) in exclude:
                continue
            kept.append((score, index, tile_index))
            if len(kept) == top_k:
                break
        records = {}
        for index in {id(index): index for _, index, _ in kept}.values():
            records[id(index)] = index.records([t for _, other, t in kept if other is index])
        results = []
        for rank, (score, index, tile_index) in enumerate(kept, start=1):
            record = records[id(index)][tile_index]
            results.append(SearchResult(rank, score, record.tile_id, index.raster_uri, index.raster_name,
                                        record.window, record.bounds, index.crs_wkt, record.corners_lonlat,
                                        index.key, record.corners))
        return results


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if norm < 1e-12:
        raise QueryError("The query cancels out (positives equal negatives); change the examples.")
    return (vector / norm).astype(np.float32)
