"""CRS maths done by QGIS (never pyproj inside QGIS): CRS from strings, and the transform callables
that ``core.search.Searcher`` takes, bound to a transform context captured in the GUI thread."""

from __future__ import annotations

import math
from functools import lru_cache

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
)

__all__ = ["crs_from_string", "qgis_transforms"]


@lru_cache(maxsize=64)
def crs_from_string(text: str) -> QgsCoordinateReferenceSystem:
    """A CRS from ``EPSG:xxxx``-style ids or from WKT (what the index stores)."""
    text = text.strip()
    crs = QgsCoordinateReferenceSystem(text) if len(text) < 64 and ":" in text else \
        QgsCoordinateReferenceSystem.fromWkt(text)
    if not crs.isValid():
        crs = QgsCoordinateReferenceSystem.fromWkt(text)
    return crs


def qgis_transforms(context: QgsCoordinateTransformContext | None = None):
    """``(transform_bounds, transform_point)`` for ``core.search.Searcher``, done with QGIS.

    Build it in the GUI thread (it captures the project's transform context); the callables may
    then run in any thread. A box that cannot be transformed matches nothing.
    """
    context = QgsCoordinateTransformContext(context or QgsProject.instance().transformContext())

    def transform_bounds(bounds, src_crs: str, dst_crs: str):
        transform = QgsCoordinateTransform(crs_from_string(src_crs), crs_from_string(dst_crs), context)
        try:
            box = transform.transformBoundingBox(QgsRectangle(*bounds))
        except QgsCsException:
            return (math.inf, math.inf, -math.inf, -math.inf)
        return (box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum())

    def transform_point(x: float, y: float, src_crs: str, dst_crs: str):
        transform = QgsCoordinateTransform(crs_from_string(src_crs), crs_from_string(dst_crs), context)
        try:
            point = transform.transform(QgsPointXY(x, y))
        except QgsCsException:
            return (math.inf, math.inf)
        return (point.x(), point.y())

    return transform_bounds, transform_point
