"""Grid maths: tile windows over a raster in pixel space, and their georeferenced bounds.

Pure functions and small frozen dataclasses, no I/O. Units are stated in names: ``*_px`` are
pixels of the raster; bounds are in the raster's CRS units (metres, degrees, or pixels when the
raster has no CRS). Geotransforms use GDAL's order ``(x0, pixel_w, row_rot, y0, col_rot, pixel_h)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["GridSpec", "Window", "Tile", "grid_axis", "tile_grid", "window_bounds", "pixel_at"]

Bounds = tuple[float, float, float, float]  # (minx, miny, maxx, maxy)


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


def pixel_at(transform: tuple[float, ...], x: float, y: float) -> tuple[float, float]:
    """(col, row) in fractional pixels of a point in the raster's CRS (inverse geotransform)."""
    x0, a, b, y0, d, e = transform
    det = a * e - b * d
    if det == 0:
        raise ValueError("the raster's geotransform cannot be inverted")
    dx, dy = x - x0, y - y0
    return (e * dx - b * dy) / det, (-d * dx + a * dy) / det
