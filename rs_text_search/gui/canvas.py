"""Map canvas helpers: zoom to a result tile, flash it, keep the chosen tile outlined.

Every canvas item made here is owned by a ``Highlight`` and removed by ``Highlight.clear()``
(called when the plugin unloads), so nothing is left on the canvas.
"""

from __future__ import annotations

import contextlib

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsWkbTypes,
)
from qgis.gui import QgsMapCanvas, QgsRubberBand
from qgis.PyQt.QtGui import QColor

from ..core.search import SearchResult
from .crs import crs_from_string

__all__ = ["Highlight", "crs_string", "to_layer_crs", "result_geometry", "zoom_and_flash"]

TILE_SHARE_OF_VIEW = 0.3  # after zooming, a tile spans about this fraction of the map's width
HIGHLIGHT_COLOUR = QColor(0, 229, 255)  # cyan: apart from the yellow-red score colours


def crs_string(crs: QgsCoordinateReferenceSystem) -> str:
    """``EPSG:xxxx`` when the CRS has one, else its WKT (both understood by ``crs_from_string``)."""
    authid = crs.authid()
    return authid if authid and not authid.upper().startswith("USER:") else \
        crs.toWkt(QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED)


def to_layer_crs(canvas: QgsMapCanvas, rect: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> QgsRectangle:
    source = canvas.mapSettings().destinationCrs()
    if not crs.isValid() or not source.isValid() or source == crs:
        return QgsRectangle(rect)
    transform = QgsCoordinateTransform(source, crs, QgsProject.instance().transformContext())
    try:
        return transform.transformBoundingBox(rect)
    except QgsCsException:
        return QgsRectangle()


def result_geometry(result: SearchResult, canvas_crs: QgsCoordinateReferenceSystem) -> QgsGeometry:
    """The result tile as a polygon in the canvas CRS (corners transformed, so rotation shows)."""
    minx, miny, maxx, maxy = result.bounds
    ring = [QgsPointXY(minx, maxy), QgsPointXY(maxx, maxy), QgsPointXY(maxx, miny), QgsPointXY(minx, miny)]
    geometry = QgsGeometry.fromPolygonXY([ring + ring[:1]])
    if result.crs_wkt and canvas_crs.isValid():
        source = crs_from_string(result.crs_wkt)
        if source != canvas_crs:
            geometry.densifyByCount(4)
            try:
                geometry.transform(QgsCoordinateTransform(source, canvas_crs, QgsProject.instance().transformContext()))
            except QgsCsException:
                return QgsGeometry()
    return geometry


class Highlight:
    """The outline of the result chosen in the list (one rubber band, replaced on each choice)."""

    def __init__(self, canvas: QgsMapCanvas) -> None:
        self.canvas = canvas
        self.band: QgsRubberBand | None = None

    def show(self, geometry: QgsGeometry) -> None:
        self.clear()
        band = QgsRubberBand(self.canvas, QgsWkbTypes.GeometryType.PolygonGeometry)
        band.setStrokeColor(HIGHLIGHT_COLOUR)
        band.setFillColor(QColor(0, 0, 0, 0))
        band.setWidth(3)
        band.setToGeometry(geometry, None)
        self.band = band

    def clear(self) -> None:
        if self.band is not None:
            with contextlib.suppress(RuntimeError):  # the canvas is already gone
                self.canvas.scene().removeItem(self.band)
            self.band = None


def zoom_and_flash(canvas: QgsMapCanvas, result: SearchResult, highlight: Highlight | None = None) -> None:
    crs = canvas.mapSettings().destinationCrs()
    geometry = result_geometry(result, crs)
    if geometry.isEmpty():
        return
    box = geometry.boundingBox()
    view = QgsRectangle(box)
    view.scale(1.0 / TILE_SHARE_OF_VIEW)
    canvas.setExtent(view)
    canvas.refresh()
    if highlight is not None:
        highlight.show(geometry)
    canvas.flashGeometries([geometry], crs, QColor(255, 255, 255, 200), QColor(0, 229, 255, 160), 3, 250)
