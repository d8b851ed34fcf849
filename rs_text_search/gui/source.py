"""``RasterSource`` over a QGIS raster layer's data provider (files, XYZ, WMS: any raster provider).

Pixels are read with ``QgsRasterDataProvider.block()`` directly at the model's input size, and
CRS maths go through ``QgsCoordinateTransform``, so QGIS never gets a second GDAL or PROJ.

- ``plan_layer`` (GUI thread) looks at a layer once: pixel grid, CRS, which bands make R, G, B
  (from the layer's renderer: multiband colour, grey, palette), alpha band, nodata, and a
  2-98 % stretch for data that is not 8-bit, like the headless rasterio source;
- ``QgisRasterSource`` (built in the GUI thread, read from worker threads) owns cloned providers,
  one per reading thread, so the layer itself is never touched off the GUI thread.

Layers with a pixel size (files) use their own grid, and a file's identity is exactly the one
the headless source computes, so indexes made on the command line are reused in QGIS and the
other way round. Online layers (XYZ, WMS) have no pixel grid: the caller gives an extent and a
ground resolution, and both are part of the identity.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsPointXY,
    QgsProject,
    QgsProviderRegistry,
    QgsRaster,
    QgsRasterDataProvider,
    QgsRasterLayer,
    QgsRectangle,
    QgsSingleBandGrayRenderer,
)

from ..core.cache import cache_root, index_key
from ..core.errors import RasterError
from ..core.resample import resample_band, resample_nearest
from ..core.sources import STRETCH_PERCENTILES, STRETCH_SAMPLE_PX, raster_identity
from ..core.tiling import Window, pixel_ground_m
from .crs import crs_from_string

__all__ = ["LayerPlan", "QgisRasterSource", "plan_layer", "is_online", "lookup_identity", "partial_index_exists"]

MAX_VIRTUAL_PIXELS = 40_000 * 40_000  # online layers: refuse grids that would take days to index
READER_HANDLES = 2  # provider clones made up front, one per reader thread of core.indexing

_NUMPY_TYPES = {
    Qgis.DataType.Byte: np.uint8, Qgis.DataType.UInt16: np.uint16, Qgis.DataType.Int16: np.int16,
    Qgis.DataType.UInt32: np.uint32, Qgis.DataType.Int32: np.int32, Qgis.DataType.Float32: np.float32,
    Qgis.DataType.Float64: np.float64, Qgis.DataType.ARGB32: np.uint32,
    Qgis.DataType.ARGB32_Premultiplied: np.uint32,
}
_ARGB = (Qgis.DataType.ARGB32, Qgis.DataType.ARGB32_Premultiplied)


@dataclass(frozen=True)
class LayerPlan:
    """Everything needed to read a layer without touching it again (values, no QGIS objects)."""

    uri: str
    name: str
    width: int  # pixels of the (possibly virtual) grid
    height: int
    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float]  # GDAL geotransform, north-up
    kind: str  # "bands" (1 or 3 bands), "palette" (1 band + lookup) or "argb" (rendered tiles)
    bands: tuple[int, ...]
    alpha_band: int | None
    nodata: tuple[tuple[float | None, tuple[tuple[float, float], ...]], ...]  # per band: value, ranges
    identity: dict
    palette: np.ndarray | None = field(default=None, compare=False)  # [n, 3] uint8 lookup
    stretch: np.ndarray | None = field(default=None, compare=False)  # [bands, 2] low, high
    premultiplied: bool = False


def is_online(layer: QgsRasterLayer) -> bool:
    """True for layers without their own pixel grid (XYZ, WMS, WMTS...)."""
    provider = layer.dataProvider()
    return not (bool(provider.capabilities() & QgsRasterDataProvider.Capability.Size)
                and provider.xSize() > 0 and provider.ySize() > 0)


def _file_path(layer: QgsRasterLayer) -> Path | None:
    if layer.providerType() != "gdal":
        return None
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = Path(parts.get("path") or layer.source())
    return path if path.is_file() and not parts.get("layerName") else None


def _file_grid(provider: QgsRasterDataProvider) -> tuple[int, int, tuple[float, float, float, float, float, float]]:
    """(width, height, north-up GDAL geotransform) of a provider with its own pixel grid."""
    full = provider.extent()
    width, height = provider.xSize(), provider.ySize()
    return width, height, (full.xMinimum(), full.width() / width, 0.0, full.yMaximum(), 0.0, -full.height() / height)


def _points_to_wgs84(transform: QgsCoordinateTransform, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, ...]:
    """Longitudes and latitudes of points (NaN where the transform fails)."""
    lon, lat = np.full(len(xs), np.nan), np.full(len(xs), np.nan)
    for i, (x, y) in enumerate(zip(np.asarray(xs, float), np.asarray(ys, float))):
        try:
            point = transform.transform(QgsPointXY(x, y))
        except QgsCsException:
            continue
        lon[i], lat[i] = point.x(), point.y()
    return lon, lat


def layer_ground_m(layer: QgsRasterLayer, context: QgsCoordinateTransformContext | None = None) -> float | None:
    """Metres of ground per pixel at the centre of a layer with its own pixel grid (GUI thread), as
    ``core.tiling.pixel_ground_m`` measures it for indexing; None for online layers or without a CRS."""
    if not layer.isValid() or layer.dataProvider() is None or is_online(layer) or not layer.crs().isValid():
        return None
    width, height, transform = _file_grid(layer.dataProvider())
    to_wgs84 = QgsCoordinateTransform(layer.crs(), QgsCoordinateReferenceSystem("EPSG:4326"),
                                      context or QgsProject.instance().transformContext())
    return pixel_ground_m(transform, width, height, lambda xs, ys: _points_to_wgs84(to_wgs84, xs, ys))


def _choose_bands(layer: QgsRasterLayer) -> tuple[str, tuple[int, ...], np.ndarray | None]:
    provider = layer.dataProvider()
    count = provider.bandCount()
    if provider.dataType(1) in _ARGB:
        return "argb", (1,), None
    renderer = layer.renderer()
    palette = None
    if isinstance(renderer, QgsMultiBandColorRenderer):
        chosen = (renderer.redBand(), renderer.greenBand(), renderer.blueBand())
        if any(not 1 <= band <= count for band in chosen):
            chosen = (1, 2, 3) if count >= 3 else (1,)
    elif isinstance(renderer, QgsSingleBandGrayRenderer):
        chosen = (renderer.grayBand(),)
    elif isinstance(renderer, QgsPalettedRasterRenderer):
        chosen = (renderer.band(),)
        palette = _lookup([(int(c.value), c.color) for c in renderer.classes()])
    else:
        used = [band for band in (renderer.usesBands() if renderer else []) if 1 <= band <= count]
        chosen = (used[0] if used else 1,)
    if palette is None and len(chosen) == 1 and \
            provider.colorInterpretation(chosen[0]) == QgsRaster.ColorInterpretation.PaletteIndex:
        palette = _lookup([(int(item.value), item.color) for item in provider.colorTable(chosen[0])])
    return ("palette" if palette is not None else "bands"), tuple(chosen), palette


def _lookup(entries: list) -> np.ndarray | None:
    values = [value for value, _ in entries if value >= 0]
    if not values:
        return None
    table = np.zeros((min(max(values) + 1, 65536), 3), dtype=np.uint8)
    for value, colour in entries:
        if 0 <= value < len(table):
            table[value] = (colour.red(), colour.green(), colour.blue())
    return table


def _nodata(provider: QgsRasterDataProvider, band: int) -> tuple[float | None, tuple[tuple[float, float], ...]]:
    value = None
    if provider.sourceHasNoDataValue(band) and provider.useSourceNoDataValue(band):
        value = float(provider.sourceNoDataValue(band))
    ranges = tuple((float(r.min()), float(r.max())) for r in provider.userNoDataValues(band))
    return value, ranges


def plan_layer(layer: QgsRasterLayer, extent: QgsRectangle | None = None,
               resolution: float | None = None) -> LayerPlan:
    """Look at a layer once (GUI thread). ``extent`` and ``resolution`` (layer CRS units per pixel)
    are needed only for online layers; raises ``RasterError`` with one sentence otherwise."""
    if not isinstance(layer, QgsRasterLayer):
        name = layer.name() if hasattr(layer, "name") else str(layer)
        raise RasterError(f"'{name}' is not a raster layer; only raster layers can be indexed.")
    provider = layer.dataProvider()
    if not layer.isValid() or provider is None or not provider.isValid():
        raise RasterError(f"The layer '{layer.name()}' cannot be read (its data source is missing or broken).")
    if provider.bandCount() < 1:
        raise RasterError(f"The layer '{layer.name()}' has no bands to index.")
    crs = layer.crs()
    crs_wkt = crs.toWkt(QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED) if crs.isValid() else None
    kind, bands, palette = _choose_bands(layer)
    if not is_online(layer):
        width, height, (origin_x, res_x, _, origin_y, _, res_y) = _file_grid(provider)
        res_y, origin = -res_y, (origin_x, origin_y)
    else:
        area = QgsRectangle(layer.extent()) if extent is None else extent.intersect(layer.extent())
        resolution = resolution or min((r for r in provider.nativeResolutions() if r > 0), default=0.0)
        if area.isEmpty() or area.width() <= 0 or area.height() <= 0:
            raise RasterError(f"The map extent does not overlap the layer '{layer.name()}'; pan to it first.")
        if not resolution or resolution <= 0:
            raise RasterError(f"The layer '{layer.name()}' has no pixel size; index it from the map at a chosen scale.")
        width, height = math.ceil(area.width() / resolution), math.ceil(area.height() / resolution)
        if width * height > MAX_VIRTUAL_PIXELS:
            raise RasterError(f"Indexing '{layer.name()}' over this extent means {width} x {height} pixels; "
                              "zoom in to a smaller area first.")
        res_x = res_y = float(resolution)
        origin = (area.xMinimum(), area.yMaximum())
    transform = (origin[0], res_x, 0.0, origin[1], 0.0, -res_y)
    alpha = next((b for b in range(1, provider.bandCount() + 1)
                  if provider.colorInterpretation(b) == QgsRaster.ColorInterpretation.AlphaBand
                  and b not in bands), None)
    if layer.renderer() is not None and layer.renderer().alphaBand() > 0:
        alpha = layer.renderer().alphaBand()
    nodata = tuple(_nodata(provider, band) for band in bands)
    path = _file_path(layer)
    if path is not None and crs_wkt is not None:
        identity = raster_identity(path)  # the headless source's identity: shared cache
        identity["bands"] = list(bands)
        uri = str(path)
    else:
        identity = {"source": layer.source(), "provider": layer.providerType(), "reader": "qgis",
                    "origin": [round(v, 9) for v in origin], "resolution": [round(res_x, 12), round(res_y, 12)],
                    "width": width, "height": height, "bands": list(bands)}
        uri = layer.source()
    plan = LayerPlan(uri, layer.name(), int(width), int(height), crs_wkt, transform, kind, bands, alpha, nodata,
                     identity, palette, None, provider.dataType(1) == Qgis.DataType.ARGB32_Premultiplied)
    if kind == "bands" and any(provider.dataType(b) != Qgis.DataType.Byte for b in bands):
        plan = _with_stretch(plan, provider)
    return plan


def _with_stretch(plan: LayerPlan, provider: QgsRasterDataProvider) -> LayerPlan:
    """Per-band 2nd-98th percentile from one decimated read, as the headless source does."""
    scale = min(1.0, STRETCH_SAMPLE_PX / max(plan.width, plan.height))
    window = Window(0, 0, plan.width, plan.height)
    out_w, out_h = max(1, round(plan.width * scale)), max(1, round(plan.height * scale))
    limits = np.zeros((len(plan.bands), 2))
    for i, band in enumerate(plan.bands):
        values, valid = _read_band(provider, band, _window_rect(plan, window), out_w, out_h, plan.nodata[i])
        values = values[valid & np.isfinite(values)]
        if values.size == 0:
            raise RasterError(f"'{plan.name}' contains only nodata; there is nothing to index.")
        limits[i] = np.percentile(values, STRETCH_PERCENTILES)
    return replace(plan, stretch=limits)


def lookup_identity(layer: QgsRasterLayer) -> dict:
    """The identity used to find a layer's indexes without planning a read (cheap, GUI thread).

    Georeferenced files: exactly the identity stored by indexing. Other layers: their source and
    bands, which every index of that layer shares whatever extent was indexed.
    """
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid() or layer.dataProvider() is None:
        raise RasterError(f"The layer '{layer.name()}' cannot be read.")
    _, bands, _ = _choose_bands(layer)
    path = _file_path(layer)
    if path is not None and layer.crs().isValid():
        identity = raster_identity(path)
        identity["bands"] = list(bands)
        return identity
    return {"source": layer.source(), "bands": list(bands)}


def partial_index_exists(identity: dict, model_sha256: str, grid: dict) -> bool:
    """True when an unfinished index (a cancelled run) of a file waits to be resumed."""
    if "path" not in identity:
        return False
    meta = cache_root() / "indexes" / index_key(identity, model_sha256, grid) / "meta.json"
    return meta.is_file()


def _window_rect(plan: LayerPlan, window: Window) -> QgsRectangle:
    x0, res_x, _, y0, _, neg_res_y = plan.transform
    return QgsRectangle(x0 + window.col_off * res_x, y0 + (window.row_off + window.height) * neg_res_y,
                        x0 + (window.col_off + window.width) * res_x, y0 + window.row_off * neg_res_y)


def _read_band(provider: QgsRasterDataProvider, band: int, rect: QgsRectangle, width: int, height: int,
               nodata: tuple[float | None, tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(values HxW, valid HxW) of one band over ``rect`` resampled to width x height."""
    block = provider.block(band, rect, width, height)
    if block is None or not block.isValid() or block.width() != width or block.height() != height:
        raise RasterError(f"The data provider returned no pixels for band {band} (is the source reachable?).")
    dtype = _NUMPY_TYPES.get(block.dataType())
    if dtype is None:
        raise RasterError(f"Band {band} has a data type ({block.dataType()}) that cannot be indexed.")
    values = np.frombuffer(bytes(block.data()), dtype=dtype).reshape(height, width)
    valid = np.ones((height, width), dtype=bool)
    value, ranges = nodata
    if value is not None:
        valid &= ~((values == value) | (np.isnan(values) if math.isnan(value) else False))
    for low, high in ranges:
        valid &= ~((values >= low) & (values <= high))
    if block.hasNoData() and not block.hasNoDataValue():  # a no-data bitmap (e.g. a GDAL mask band)
        flags = [block.isNoData(i) for i in range(width * height)]
        valid &= ~np.array(flags, dtype=bool).reshape(height, width)
    if values.dtype.kind == "f":
        valid &= np.isfinite(values)
    return values, valid


class _Handles:
    """Cloned providers shared by a source and its clones; freed together with the root source."""

    def __init__(self, layer: QgsRasterLayer, spares: int) -> None:
        self.lock = threading.Lock()
        self.owned = [layer.dataProvider().clone() for _ in range(spares + 1)]
        self.spares = list(self.owned[1:])

    def take(self, template: QgsRasterDataProvider) -> QgsRasterDataProvider:
        with self.lock:
            if self.spares:
                return self.spares.pop()
            provider = template.clone()
            self.owned.append(provider)
            return provider


class QgisRasterSource:
    """``core.sources.RasterSource`` over a QGIS raster layer; build it in the GUI thread."""

    def __init__(self, layer: QgsRasterLayer, extent: QgsRectangle | None = None, resolution: float | None = None,
                 transform_context: QgsCoordinateTransformContext | None = None,
                 reader_handles: int = READER_HANDLES) -> None:
        plan = plan_layer(layer, extent, resolution)
        handles = _Handles(layer, reader_handles)
        context = transform_context or QgsProject.instance().transformContext()
        self._setup(plan, handles, handles.owned[0], context)
        self.layer_id = layer.id()

    def _setup(self, plan: LayerPlan, handles: _Handles, provider: QgsRasterDataProvider,
               context: QgsCoordinateTransformContext) -> None:
        self.plan = plan
        self.uri, self.name = plan.uri, plan.name
        self.width, self.height = plan.width, plan.height
        self.crs_wkt, self.transform = plan.crs_wkt, plan.transform
        self._handles, self._provider, self._context = handles, provider, context
        self._local = threading.local()

    def identity(self) -> dict:
        return dict(self.plan.identity)

    def read_masked(self, window: Window, out_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read the window at its own pixel size, then resample in numpy (see ``resample``)."""
        plan = self.plan
        out_w, out_h = (out_size, out_size) if out_size else (window.width, window.height)
        rect = _window_rect(plan, window)
        width, height = window.width, window.height
        if plan.kind == "argb":
            argb, _ = _read_band(self._provider, 1, rect, width, height, (None, ()))
            rgb, valid = _unpack_argb(argb, plan.premultiplied)
            bands = [rgb[..., i] for i in range(3)]
        else:
            bands, masks = [], []
            for band, nodata in zip(plan.bands, plan.nodata):
                values, band_valid = _read_band(self._provider, band, rect, width, height, nodata)
                bands.append(values)
                masks.append(band_valid)
            valid = masks[0].copy()  # like GDAL's mask of the first band, which the headless source uses
            if plan.alpha_band is not None:
                alpha, _ = _read_band(self._provider, plan.alpha_band, rect, width, height, (None, ()))
                valid &= alpha > 0
                masks = [mask & valid for mask in masks]
        if plan.palette is not None:
            indexes = np.clip(resample_nearest(bands[0], out_h, out_w).astype(np.int64), 0, len(plan.palette) - 1)
            return plan.palette[indexes], resample_nearest(valid, out_h, out_w)
        if plan.kind == "argb":
            masks = [valid] * 3
        # Each band averages its own valid pixels, as GDAL does with a per-band nodata value.
        resampled = [resample_band(values, mask, out_h, out_w)[0] for values, mask in zip(bands, masks)]
        valid = resample_nearest(valid, out_h, out_w)
        data = np.stack(resampled)
        if plan.stretch is not None:
            data = _stretch(data, plan.stretch)
        else:
            data = np.clip(np.floor(data + 0.5), 0, 255)  # GDAL rounds averages half up
        data = data.astype(np.uint8)
        rgb = np.repeat(data, 3, axis=0) if len(resampled) == 1 else data
        return np.ascontiguousarray(rgb.transpose(1, 2, 0)), valid

    def read(self, window: Window, out_size: int | None = None) -> np.ndarray:
        return self.read_masked(window, out_size)[0]

    def to_wgs84(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if self.crs_wkt is None:
            return None
        transform = getattr(self._local, "to_wgs84", None)
        if transform is None:  # one QgsCoordinateTransform per thread
            transform = QgsCoordinateTransform(crs_from_string(self.crs_wkt),
                                               QgsCoordinateReferenceSystem("EPSG:4326"), self._context)
            self._local.to_wgs84 = transform
        return _points_to_wgs84(transform, xs, ys)

    def coverage(self) -> None:
        """Unknown: a QGIS data provider offers no cheap coverage query (GDAL's block table and
        ``GetDataCoverageStatus`` stay behind ``block()``, and online layers have neither), so every tile is
        read. A file layer indexed headless first gets the fast path: the cache is shared."""
        return None

    def clone(self) -> QgisRasterSource:
        twin = QgisRasterSource.__new__(QgisRasterSource)
        twin._setup(self.plan, self._handles, self._handles.take(self._provider), self._context)
        twin.layer_id = self.layer_id
        return twin

    def close(self) -> None:
        """Nothing to do: providers are freed with the source that cloned them (GUI thread)."""


def _unpack_argb(argb: np.ndarray, premultiplied: bool) -> tuple[np.ndarray, np.ndarray]:
    alpha = (argb >> 24).astype(np.float32)
    rgb = np.stack([(argb >> 16) & 255, (argb >> 8) & 255, argb & 255], axis=-1).astype(np.float32)
    if premultiplied:
        rgb = np.where(alpha[..., None] > 0, rgb * 255.0 / np.maximum(alpha[..., None], 1.0), 0.0)
    return np.clip(rgb, 0, 255).astype(np.uint8), alpha > 0


def _stretch(data: np.ndarray, limits: np.ndarray) -> np.ndarray:
    low, high = limits[:, 0, None, None], limits[:, 1, None, None]
    scaled = (data.astype(np.float32) - low) / np.maximum(high - low, 1e-12) * 255.0
    return np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)
