"""Grid maths: tile windows over a raster in pixel space, and their georeferenced bounds.

Pure functions and small frozen dataclasses, no I/O. Units are stated in names: ``*_px`` are
pixels of the raster; bounds are in the raster's CRS units (metres, degrees, or pixels when the
raster has no CRS). Geotransforms use GDAL's order ``(x0, pixel_w, row_rot, y0, col_rot, pixel_h)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["GridSpec", "Window", "Tile", "Coverage", "grid_axis", "tile_grid", "certainly_empty", "window_bounds",
           "window_corners", "pixel_at", "pixel_ground_m", "matched_tile_px"]

Bounds = tuple[float, float, float, float]  # (minx, miny, maxx, maxy)
EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)


@dataclass(frozen=True)
class GridSpec:
    """A regular tile grid.

    tile_size_px: side of a square tile in raster pixels (by default the model's input size,
        so one raster pixel is one model pixel).
    overlap: fraction of a tile shared with its neighbour, 0 <= overlap < 1 (0.5 = half a tile).
    """

    tile_size_px: int = 224
    overlap: float = 0.0

    def __post_init__(self) -> None:
        if self.tile_size_px < 8:
            raise ValueError(f"tile size must be at least 8 pixels, got {self.tile_size_px}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be a fraction in [0, 1), got {self.overlap}")

    @property
    def stride_px(self) -> int:
        """Step between tile origins in pixels (at least one pixel)."""
        return max(1, round(self.tile_size_px * (1.0 - self.overlap)))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Window:
    """A pixel rectangle: column/row offset of its top-left corner and its size, in raster pixels."""

    col_off: int
    row_off: int
    width: int
    height: int


@dataclass(frozen=True)
class Tile:
    """One grid cell: ``index`` is row-major (``row * n_cols + col``) and stable for a raster + grid."""

    index: int
    row: int
    col: int
    window: Window


@dataclass(frozen=True)
class Coverage:
    """Where a raster may hold valid pixels, told without reading them (``RasterSource.coverage``).

    The raster is cut into cells of ``cell_width_px`` x ``cell_height_px`` pixels from its top-left corner
    (a GeoTIFF's blocks); ``maybe_valid[row, col]`` is False only when no pixel of that cell is valid, and
    True when some may be. A window touching any cell that may be valid is never called empty.
    """

    cell_width_px: int
    cell_height_px: int
    maybe_valid: np.ndarray  # bool [cell rows, cell columns]


def certainly_empty(coverage: Coverage, windows: list[Window]) -> np.ndarray:
    """bool [len(windows)]: True for a window whose every pixel lies in cells with no valid pixel.

    One summed-area table over the cells, so a window costs four lookups whatever its size; a window
    reaching outside the cells is never empty (nothing is known there).
    """
    cells = np.asarray(coverage.maybe_valid, dtype=bool)
    if not windows or cells.size == 0:
        return np.zeros(len(windows), dtype=bool)
    n_rows, n_cols = cells.shape
    table = np.zeros((n_rows + 1, n_cols + 1), dtype=np.int64)
    table[1:, 1:] = cells.cumsum(axis=0).cumsum(axis=1)
    box = np.array([(w.col_off, w.row_off, w.width, w.height) for w in windows], dtype=np.int64)
    col0, row0 = box[:, 0] // coverage.cell_width_px, box[:, 1] // coverage.cell_height_px
    col1 = (box[:, 0] + box[:, 2] - 1) // coverage.cell_width_px + 1  # exclusive
    row1 = (box[:, 1] + box[:, 3] - 1) // coverage.cell_height_px + 1
    inside = (box[:, 0] >= 0) & (box[:, 1] >= 0) & (col1 <= n_cols) & (row1 <= n_rows) & (box[:, 2] > 0) \
        & (box[:, 3] > 0)
    col0, col1 = np.clip(col0, 0, n_cols), np.clip(col1, 0, n_cols)
    row0, row1 = np.clip(row0, 0, n_rows), np.clip(row1, 0, n_rows)
    maybe = table[row1, col1] - table[row0, col1] - table[row1, col0] + table[row0, col0]
    return inside & (maybe == 0)


def grid_axis(length_px: int, tile_size_px: int, stride_px: int) -> list[tuple[int, int]]:
    """Tile (offset, size) pairs covering ``length_px`` pixels along one axis.

    Tiles start every ``stride_px`` pixels; the last tile is moved back so that it ends exactly on
    the raster's edge (every pixel is covered and every tile is full size). An axis shorter than
    one tile gets a single, shorter tile.

    >>> grid_axis(500, 224, 224)
    [(0, 224), (224, 224), (276, 224)]
    """
    if length_px <= 0:
        return []
    if length_px <= tile_size_px:
        return [(0, length_px)]
    count = math.ceil((length_px - tile_size_px) / stride_px) + 1
    offsets = [min(i * stride_px, length_px - tile_size_px) for i in range(count)]
    return [(offset, tile_size_px) for offset in offsets]


def tile_grid(width_px: int, height_px: int, grid: GridSpec) -> tuple[int, int, list[Tile]]:
    """All tiles of a ``width_px`` x ``height_px`` raster, row-major; returns (n_rows, n_cols, tiles)."""
    cols = grid_axis(width_px, grid.tile_size_px, grid.stride_px)
    rows = grid_axis(height_px, grid.tile_size_px, grid.stride_px)
    tiles = [
        Tile(r * len(cols) + c, r, c, Window(col_off, row_off, w, h))
        for r, (row_off, h) in enumerate(rows)
        for c, (col_off, w) in enumerate(cols)
    ]
    return len(rows), len(cols), tiles


def _apply(transform: tuple[float, ...], col: float, row: float) -> tuple[float, float]:
    x0, a, b, y0, d, e = transform
    return x0 + col * a + row * b, y0 + col * d + row * e


def window_bounds(transform: tuple[float, ...], window: Window) -> Bounds:
    """(minx, miny, maxx, maxy) of a window's four corners in the raster's CRS (rotation-safe)."""
    corners = [
        _apply(transform, window.col_off + dc, window.row_off + dr)
        for dc in (0, window.width)
        for dr in (0, window.height)
    ]
    xs, ys = zip(*corners)
    return min(xs), min(ys), max(xs), max(ys)


def windows_bounds(transform: tuple[float, ...], boxes: np.ndarray) -> np.ndarray:
    """``window_bounds`` of many windows at once: ``boxes`` [n, 4] (col_off, row_off, width, height) to [n, 4]
    (minx, miny, maxx, maxy), the same arithmetic in the same order, so the same floats."""
    x0, a, b, y0, d, e = transform
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    cols = boxes[:, [0, 0, 0, 0]] + boxes[:, [2]] * np.array([0, 0, 1, 1])  # corners (0,0) (0,h) (w,0) (w,h)
    rows = boxes[:, [1, 1, 1, 1]] + boxes[:, [3]] * np.array([0, 1, 0, 1])
    xs = x0 + cols * a + rows * b
    ys = y0 + cols * d + rows * e
    return np.stack([xs.min(axis=1), ys.min(axis=1), xs.max(axis=1), ys.max(axis=1)], axis=1)


def window_corners(transform: tuple[float, ...], window: Window) -> list[list[float]]:
    """The window's four corners ``[[x, y] x 4]`` in the raster's CRS, clockwise from top-left (pixel
    order; rotation-safe, unlike the envelope of ``window_bounds``)."""
    right, bottom = window.col_off + window.width, window.row_off + window.height
    return [list(_apply(transform, col, row)) for col, row in
            ((window.col_off, window.row_off), (right, window.row_off), (right, bottom), (window.col_off, bottom))]


def pixel_at(transform: tuple[float, ...], x: float, y: float) -> tuple[float, float]:
    """(col, row) in fractional pixels of a point in the raster's CRS (inverse geotransform)."""
    x0, a, b, y0, d, e = transform
    det = a * e - b * d
    if det == 0:
        raise ValueError("the raster's geotransform cannot be inverted")
    dx, dy = x - x0, y - y0
    return (e * dx - b * dy) / det, (-d * dx + a * dy) / det


def pixel_ground_m(transform: tuple[float, ...], width_px: int, height_px: int,
                   to_wgs84: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]) -> float | None:
    """Ground size of one pixel in metres at the raster's centre: the mean of its two sides, measured
    on the sphere between the lon/lat of the centre pixel's corners. Works for any CRS (degrees, feet,
    metres) the ``to_wgs84`` callable understands; None without a CRS or when the points do not project."""
    col, row = width_px / 2.0, height_px / 2.0
    points = [_apply(transform, col + dc, row + dr) for dc, dr in ((0, 0), (1, 0), (0, 1))]
    lonlat = to_wgs84(np.array([p[0] for p in points]), np.array([p[1] for p in points]))
    if lonlat is None:
        return None
    lon, lat = (np.radians(np.asarray(a, dtype=float)) for a in lonlat)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        return None

    def metres(i: int) -> float:  # haversine from the corner to point i
        h = np.sin((lat[i] - lat[0]) / 2) ** 2 + np.cos(lat[0]) * np.cos(lat[i]) * np.sin((lon[i] - lon[0]) / 2) ** 2
        return float(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(min(1.0, h))))

    size = (metres(1) + metres(2)) / 2
    return size if size > 0 else None


def matched_tile_px(model_size_px: int, model_ground_m_per_px: float, raster_ground_m_per_px: float,
                    min_scale: float = 0.125, max_scale: float = 8.0) -> tuple[int, bool]:
    """Tile side in raster pixels that covers the ground one model input covered in training.

    A model trained on 0.3 m imagery cut into 78 m images sees a 1 m orthophoto best in 78-pixel tiles
    (upsampled to its input), not in tiles of its input size (128 m). The side is kept between
    ``min_scale`` and ``max_scale`` times the model's input (upsampling more than 8x only invents
    detail; larger tiles only cost reading). The floor was 1/4 of the input until the 224 px model:
    measured with ``training.scale_check`` on UCM val shown as 2 m and 4 m rasters, 78 m tiles
    upsampled 5.7x (39 px) gave mR 35.4 against 28.1 for the 1/4 floor's 112 m tiles (56 px), and
    at 4 m 20.5 (28 px) against 14.0 (56 px). Returns (tile side, whether it was clamped).
    """
    wanted = model_size_px * model_ground_m_per_px / raster_ground_m_per_px
    low, high = max(8, round(model_size_px * min_scale)), round(model_size_px * max_scale)
    side = int(min(max(round(wanted), low), high))
    return side, not low <= wanted <= high
