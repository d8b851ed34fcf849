"""Raster sources: the ``RasterSource`` protocol and its rasterio implementation (headless).

A source streams pixel windows as 8-bit RGB plus a validity mask and never reads the whole
raster. Inside QGIS, ``rs_text_search.gui.source`` implements the same protocol over a layer's
data provider, so the plugin never loads rasterio's GDAL into the QGIS process.

Band handling of the rasterio source (``bands`` overrides the choice):
- 1 band: a palette is expanded to RGB; otherwise grey is repeated into R, G and B;
- 2 bands: grey + alpha; other 2-band layouts are refused (say which bands to use);
- 3+ bands: the bands whose colour interpretation is red, green, blue, else bands 1, 2, 3
  (e.g. NAIP's R, G, B, NIR);
- alpha bands, nodata values and internal masks make the validity mask;
- bands that are not 8-bit are stretched to 0-255 between their 2nd and 98th percentile,
  computed once from a decimated read (at most ``STRETCH_SAMPLE_PX`` pixels on the long side).

Where a sparse GeoTIFF (``SPARSE_OK=TRUE``) leaves blocks unwritten, GDAL reads them as nodata (0 in an
alpha band) without touching the disk: ``coverage`` lists those blocks from the file's block table, so
indexing marks the tiles inside them as nodata without reading them (see ``RasterioSource.coverage``).

GDAL's block cache (5 % of RAM by default) is limited while indexing walks the raster row by row:
see ``limit_block_cache``. A ``GDAL_CACHEMAX`` in the environment is left alone.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import RasterError
from .resample import resample_band, resample_nearest
from .tiling import Coverage, Window

__all__ = ["RasterSource", "RasterioSource", "open_raster", "raster_identity", "limit_block_cache", "PIXEL_TRANSFORM"]

STRETCH_SAMPLE_PX = 1024
STRETCH_PERCENTILES = (2.0, 98.0)
HEADER_HASH_BYTES = 65536
# Rasters without georeferencing are searched in pixel coordinates: x = column, y = row.
PIXEL_TRANSFORM = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
BLOCK_CACHE_MIN_MB = 64
COVERAGE_MAX_BLOCKS = 2_000_000  # block-table lookups for ``coverage`` (about 3 us each): at most a few seconds
_block_cache_lock = threading.Lock()
_block_cache = {"gdal_default_mb": 0, "set_mb": 0}  # GDAL's own limit, and what limit_block_cache set


@runtime_checkable
class RasterSource(Protocol):
    """What the engine needs from a raster, whoever reads its pixels."""

    uri: str  # path or provider URI; shown to users and stored in the catalog
    name: str  # short display name
    width: int  # pixels
    height: int  # pixels
    crs_wkt: str | None  # None: no CRS, coordinates are pixels
    transform: tuple[float, float, float, float, float, float]  # GDAL geotransform

    def identity(self) -> dict:
        """What makes this raster's pixels what they are (cache key): path, size, mtime, header hash."""

    def read_masked(self, window: Window, out_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 HxWx3 RGB, bool HxW valid) for a window, resampled to out_size x out_size if given."""

    def read(self, window: Window, out_size: int | None = None) -> np.ndarray:
        """uint8 HxWx3 RGB of a window."""

    def to_wgs84(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Longitudes and latitudes of points in the raster's CRS, or None without a CRS."""

    def coverage(self) -> Coverage | None:
        """Where the raster may hold valid pixels, told without reading pixels (seconds at most for any
        size), or None when that cannot be told cheaply (then every tile is read). Optional: indexing reads
        every tile of a source without it."""

    def clone(self) -> RasterSource:
        """An independent handle for another thread."""

    def close(self) -> None: ...


def raster_identity(path: str | os.PathLike) -> dict:
    """Cheap identity of a raster file: absolute path, byte size, mtime (ns) and a hash of its header."""
    path = Path(path).resolve()
    stat = path.stat()
    with open(path, "rb") as handle:
        header = hashlib.sha256(handle.read(HEADER_HASH_BYTES)).hexdigest()
    return {"path": str(path), "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "header_sha256": header}


@dataclass(frozen=True)
class _BandPlan:
    indexes: tuple[int, ...]  # 1-based rasterio band indexes read (1 or 3 of them)
    palette: np.ndarray | None  # [256, 3] uint8 lookup for paletted rasters
    stretch: np.ndarray | None  # [n, 2] (low, high) per band for non-8-bit data


class RasterioSource:
    """``RasterSource`` over a file (or any GDAL path) opened with rasterio."""

    def __init__(self, path: str | os.PathLike, bands: tuple[int, ...] | None = None, _plan=None) -> None:
        import rasterio
        from rasterio.enums import MaskFlags
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        self.uri = str(path)
        self.name = Path(self.uri).stem
        self._requested_bands = bands
        self._lock = threading.Lock()
        if not Path(self.uri).exists():
            raise RasterError(f"'{self.uri}' does not exist.")
        try:
            with warnings.catch_warnings():  # a raster without georeferencing is fine: pixel coordinates
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(self.uri)
        except RasterioIOError:
            raise RasterError(f"'{self.uri}' is not a raster that GDAL can read.") from None
        ds = self._ds
        if ds.count == 0 or ds.width == 0 or ds.height == 0:
            raise RasterError(f"'{self.uri}' has no pixels to index.")
        self.width, self.height = ds.width, ds.height
        self.crs_wkt = ds.crs.to_wkt() if ds.crs else None
        georeferenced = ds.crs is not None and not ds.transform.is_identity
        self.transform = tuple(ds.transform.to_gdal()) if georeferenced else PIXEL_TRANSFORM
        if not georeferenced:
            self.crs_wkt = None
        self._plan = _plan or self._plan_bands(bands)
        # Without nodata, alpha or an internal mask every pixel is valid: no mask to read (0.07 ms a tile).
        self._all_valid = all(ds.mask_flag_enums[i - 1] == [MaskFlags.all_valid] for i in self._plan.indexes)
        self._to_wgs84 = None
        self.block_cache_mb = limit_block_cache(ds)  # 0: GDAL_CACHEMAX set by the user

    @property
    def georeferenced(self) -> bool:
        return self.crs_wkt is not None

    def _plan_bands(self, bands: tuple[int, ...] | None) -> _BandPlan:
        from rasterio.enums import ColorInterp

        ds = self._ds
        interp = ds.colorinterp
        if bands is not None:
            bad = [b for b in bands if not 1 <= b <= ds.count]
            if len(bands) not in (1, 3) or bad:
                raise RasterError(
                    f"Bands {list(bands)} cannot be used: '{self.name}' has bands 1 to {ds.count}; "
                    "give one band (grey) or three (red, green, blue)."
                )
            indexes = tuple(bands)
        elif ds.count == 1 or (ds.count == 2 and interp[1] == ColorInterp.alpha):
            indexes = (1,)
        elif ds.count == 2:
            raise RasterError(
                f"'{self.name}' has two bands and neither is alpha; say which band to show as grey "
                "(--bands 1) or which three to use."
            )
        else:
            rgb = [interp.index(c) + 1 if c in interp else None for c in (ColorInterp.red, ColorInterp.green,
                                                                          ColorInterp.blue)]
            indexes = tuple(rgb) if None not in rgb else (1, 2, 3)
        palette = None
        if len(indexes) == 1 and interp[indexes[0] - 1] == ColorInterp.palette:
            table = ds.colormap(indexes[0])
            palette = np.zeros((256, 3), dtype=np.uint8)
            for value, rgba in table.items():
                if 0 <= value < 256:
                    palette[value] = rgba[:3]
        stretch = None
        if any(ds.dtypes[i - 1] != "uint8" for i in indexes) and palette is None:
            stretch = self._percentile_stretch(indexes)
        return _BandPlan(indexes, palette, stretch)

    def _percentile_stretch(self, indexes: tuple[int, ...]) -> np.ndarray:
        """Per-band (low, high) from a decimated read: overviews are used by GDAL when they exist."""
        ds = self._ds
        scale = min(1.0, STRETCH_SAMPLE_PX / max(ds.width, ds.height))
        shape = (len(indexes), max(1, round(ds.height * scale)), max(1, round(ds.width * scale)))
        sample = ds.read(indexes, out_shape=shape, masked=True).astype(np.float64)
        limits = np.zeros((len(indexes), 2))
        for i, band in enumerate(sample):
            values = band.compressed()
            values = values[np.isfinite(values)]
            if values.size == 0:
                raise RasterError(f"'{self.name}' contains only nodata; there is nothing to index.")
            limits[i] = np.percentile(values, STRETCH_PERCENTILES)
        return limits

    def identity(self) -> dict:
        ident = raster_identity(self.uri)
        ident["bands"] = list(self._plan.indexes)
        return ident

    def read_masked(self, window: Window, out_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read the window at full resolution, then resample in numpy (``core.resample``).

        Full resolution rather than GDAL overviews: the QGIS source resamples the same way, so an
        index started on the command line and resumed in QGIS (same cache key) holds the same pixels.
        """
        from rasterio.errors import NodataShadowWarning
        from rasterio.windows import Window as RioWindow

        plan = self._plan
        rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
        out_h, out_w = (out_size, out_size) if out_size else (window.height, window.width)
        with self._lock, warnings.catch_warnings():  # one rasterio dataset handle is not thread-safe
            warnings.simplefilter("ignore", NodataShadowWarning)  # nodata wins over alpha, as in GDAL
            data = self._ds.read(plan.indexes, window=rio_window)
            if self._all_valid:
                masks = np.ones(data.shape, dtype=bool)
            else:
                masks = self._ds.read_masks(plan.indexes, window=rio_window) > 0
        valid = masks[0]
        if (out_h, out_w) != (window.height, window.width):
            if plan.palette is not None:
                data = resample_nearest(data[0], out_h, out_w)[None]
            else:  # each band averages its own valid pixels, as GDAL does with per-band nodata
                data = np.stack([resample_band(band, mask, out_h, out_w)[0] for band, mask in zip(data, masks)])
                if plan.stretch is None:
                    data = np.clip(np.floor(data + 0.5), 0, 255)  # averages round half up, as in GDAL
            valid = resample_nearest(valid, out_h, out_w)
        if plan.palette is not None:
            rgb = plan.palette[data[0]]
        else:
            if plan.stretch is not None:
                data = _stretch(data, plan.stretch)
            data = data.astype(np.uint8, copy=False)
            rgb = np.repeat(data, 3, axis=0) if data.shape[0] == 1 else data
            rgb = np.ascontiguousarray(rgb.transpose(1, 2, 0))
        return rgb, valid

    def read(self, window: Window, out_size: int | None = None) -> np.ndarray:
        return self.read_masked(window, out_size)[0]

    def to_wgs84(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.georeferenced:
            return None
        if self._to_wgs84 is None:
            self._to_wgs84 = _wgs84_transformer(self.crs_wkt)
        lon, lat = self._to_wgs84.transform(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))
        return np.asarray(lon), np.asarray(lat)

    def coverage(self) -> Coverage | None:
        """The blocks a sparse GeoTIFF never wrote, as cells with no valid pixel; None for other files.

        GDAL fills an unwritten block with the band's nodata value (0 without one) and lists no offset for
        it in the TIFF block table (``BLOCK_OFFSET_<col>_<row>``, a lookup without I/O once the table is
        read). Such a block is certainly invalid when the validity mask comes from that band's nodata, or
        from an alpha band without a nodata value of its own (filled with 0, transparent). Any other mask
        (an internal or external mask band, none at all) or format says nothing: None.
        """
        from rasterio.enums import ColorInterp, MaskFlags

        ds = self._ds
        first = self._plan.indexes[0]  # read_masked's validity is this band's mask
        flags = set(ds.mask_flag_enums[first - 1])
        if ds.driver != "GTiff":
            return None
        if flags == {MaskFlags.nodata}:
            band = first
        elif flags == {MaskFlags.per_dataset, MaskFlags.alpha} and ds.count in (2, 4) \
                and ds.colorinterp[-1] == ColorInterp.alpha and ds.nodatavals[-1] is None:
            band = ds.count  # GDAL's alpha mask: the last band of a 2- or 4-band raster
        else:
            return None
        block_h, block_w = ds.block_shapes[band - 1]
        n_rows, n_cols = math.ceil(ds.height / block_h), math.ceil(ds.width / block_w)
        if n_rows * n_cols > COVERAGE_MAX_BLOCKS:
            return None
        with self._lock:
            written = np.array([[ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band) is not None
                                 for col in range(n_cols)] for row in range(n_rows)], dtype=bool)
        return Coverage(block_w, block_h, written)

    def clone(self) -> RasterioSource:
        return RasterioSource(*self.reopen_args())

    def reopen_args(self) -> tuple:
        """``RasterioSource(*args)`` opens this raster again, also in another process (a Dask worker), with the
        band plan made here: every process reads the same bands with the same stretch."""
        return self.uri, self._requested_bands, self._plan

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> RasterioSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def limit_block_cache(dataset) -> int:
    """Limit GDAL's block cache to what a row-major walk over ``dataset`` needs; returns the limit in MB.

    GDAL keeps decoded blocks up to 5 % of RAM by default, so peak memory grew with the raster
    (1.7 GiB indexing a 20,000 px mosaic against 0.8 GiB for a 5,000 px one; with 64 MB: x1.17 at
    the same speed, BENCHMARKS.md figure 4). Tiles are read row by row and the reader threads work
    on neighbouring batches, so two rows of blocks (all bands, as a pixel-interleaved file decodes
    them) are kept: at least ``BLOCK_CACHE_MIN_MB``, never more than GDAL's own default, and never
    less than an earlier raster of this process needed. ``GDAL_CACHEMAX`` in the environment wins.
    """
    if "GDAL_CACHEMAX" in os.environ:
        return 0
    from rasterio.env import get_gdal_config, set_gdal_config

    block_rows = dataset.block_shapes[0][0] if dataset.block_shapes else 1
    item = max(np.dtype(dtype).itemsize for dtype in dataset.dtypes)
    needed = math.ceil(2 * dataset.width * block_rows * dataset.count * item / 2**20)
    with _block_cache_lock:
        state = _block_cache
        if not state["gdal_default_mb"]:  # read once, before anything here changed it
            value = int(get_gdal_config("GDAL_CACHEMAX") or 0)
            state["gdal_default_mb"] = max(1, value if value < 100_000 else value // 2**20)  # GDAL's rule: MB or bytes
        wanted = min(max(BLOCK_CACHE_MIN_MB, needed), state["gdal_default_mb"])
        if wanted > state["set_mb"]:
            set_gdal_config("GDAL_CACHEMAX", wanted)  # megabytes; process-wide
            state["set_mb"] = wanted
        return state["set_mb"]


@functools.lru_cache(maxsize=16)
def _wgs84_transformer(crs_wkt: str):
    """A pyproj transformer to lon/lat, made once per CRS (6 ms each: the rasters of one survey share it).
    Shared between threads: pyproj's transformers are thread-safe since pyproj 3.1."""
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_wkt(crs_wkt), "EPSG:4326", always_xy=True)


def _stretch(data: np.ndarray, limits: np.ndarray) -> np.ndarray:
    low, high = limits[:, 0, None, None], limits[:, 1, None, None]
    scaled = (data.astype(np.float32) - low) / np.maximum(high - low, 1e-12) * 255.0
    return np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)


def open_raster(path: str | os.PathLike, bands: tuple[int, ...] | None = None) -> RasterioSource:
    """Open a raster file for indexing; raises RasterError with one clear sentence when it cannot."""
    return RasterioSource(path, bands)
