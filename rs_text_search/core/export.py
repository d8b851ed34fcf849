"""Result sets -> a GeoPackage polygon layer, headless.

Written through pyogrio: it is maintained with GeoPandas, writes whole columns through OGR in one
call (no per-feature Python loop), ships its own GDAL in its wheel, and needs no pandas. Inside
QGIS the plugin writes with ``QgsVectorFileWriter`` instead, with the same fields (``FIELDS``).

CRS of the layer: the rasters' CRS when all results share one; EPSG:4326 (from each tile's corner
longitudes/latitudes) when they come from rasters in different CRSs; none (pixel coordinates) for
rasters without a CRS. The file is written beside the target and renamed onto it, so a failure
never leaves a half-written GeoPackage behind; an existing file is replaced only when it is a GeoPackage.
The ``time`` field is UTC, written with its ``Z``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cache import atomic_path, write_failure
from .errors import ExportError
from .search import SearchResult

__all__ = ["FIELDS", "export_geopackage", "result_polygons", "check_export_target"]

# (name, OGR type) of every field, in order; the plugin's writer uses the same list.
FIELDS = (
    ("rank", "int"), ("score", "float"), ("query", "str"), ("tile_id", "str"), ("raster", "str"),
    ("model_name", "str"), ("model_sha256", "str"), ("time", "datetime"),
)
WGS84_WKT = 'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],' \
            'UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]'


def result_polygons(results: Sequence[SearchResult]) -> tuple[list[list[tuple[float, float]]], str | None]:
    """Each result's polygon ring and the CRS (WKT, or None for pixel coordinates) they share."""
    crs_set = {r.crs_wkt for r in results}
    if len(crs_set) == 1:  # the tiles' real corners: on a rotated raster the envelope is up to twice as large
        crs = crs_set.pop()
        rings = [[tuple(c) for c in r.corners] if r.corners else
                 [(b[0], b[3]), (b[2], b[3]), (b[2], b[1]), (b[0], b[1])] for r, b in ((r, r.bounds) for r in results)]
        return rings, crs
    if all(r.corners_lonlat for r in results):
        return [[tuple(c) for c in r.corners_lonlat] for r in results], WGS84_WKT
    raise ExportError("These results mix rasters with and without a CRS; export them separately.")


GPKG_HEADER = b"SQLite format 3\x00"
GPKG_APPLICATION_ID = b"GPKG"  # big-endian at byte 68 of the SQLite header (OGC 12-128r18, requirement 2)
GDAL_UTC = 100  # GDAL's time zone flag for UTC (RFC 56)


def check_export_target(path: str | os.PathLike) -> Path:
    """The path results may be written to; ExportError with one sentence when they may not (checked before
    searching, so a bad ``--out`` costs nothing)."""
    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise ExportError(f"'{path}' must end in .gpkg (results are written as a GeoPackage).")
    if path.is_dir():
        raise ExportError(f"'{path}' is a folder; give the name of a .gpkg file to write.")
    if not path.parent.is_dir():
        raise ExportError(f"The folder '{path.parent}' does not exist.")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ExportError(f"'{path}' cannot be written (no permission).")
    if path.exists():
        try:
            with open(path, "rb") as handle:
                header = handle.read(72)
        except OSError as exc:
            raise ExportError(f"'{path}' cannot be read to check it ({exc.strerror}).") from None
        if header[:16] != GPKG_HEADER or header[68:72] != GPKG_APPLICATION_ID:
            raise ExportError(f"'{path}' exists and is not a GeoPackage; it is left as it is: choose another name.")
    return path


def export_geopackage(results: Sequence[SearchResult], path: str | os.PathLike, query: str, model_name: str,
                      model_sha256: str, layer: str = "rs_text_search_results") -> Path:
    """Write results as a polygon layer; returns the path. Raises ExportError with one sentence."""
    import shapely
    from pyogrio.raw import write

    path = check_export_target(path)
    if not results:
        raise ExportError("There are no results to export.")
    rings, crs = result_polygons(results)
    geometry = shapely.to_wkb(shapely.polygons([ring + [ring[0]] for ring in rings]))
    now = np.datetime64(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), "ms")
    columns = {
        "rank": np.array([r.rank for r in results], np.int32),
        "score": np.array([r.score for r in results], np.float64),
        "query": np.array([query] * len(results), object),
        "tile_id": np.array([r.tile_id for r in results], object),
        "raster": np.array([r.raster for r in results], object),
        "model_name": np.array([model_name] * len(results), object),
        "model_sha256": np.array([model_sha256] * len(results), object),
        "time": np.array([now] * len(results), "datetime64[ms]"),
    }
    try:
        with atomic_path(path) as tmp:
            write(str(tmp), geometry, [columns[name] for name, _ in FIELDS], [name for name, _ in FIELDS],
                  layer=layer, driver="GPKG", geometry_type="Polygon", crs=crs,
                  gdal_tz_offsets={"time": np.full(len(results), GDAL_UTC, np.int32)})
    except ExportError:
        raise
    except Exception as exc:  # OGR errors come as several types ("no such table" on a full disk); one sentence
        raise write_failure(f"'{path}'", path.parent, exc, ExportError) from exc
    return path
