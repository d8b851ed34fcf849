"""Result sets as map layers: a styled memory layer of tile polygons, and its GeoPackage export.

- ``results_layer`` builds a memory layer with the engine's export fields (``core.export.FIELDS``),
  polygons in the rasters' CRS (or WGS 84 corners when results come from rasters in different
  CRSs, like the headless export), graduated colours by score and rank labels;
- ``show_results_layer`` puts it on top of the layer tree, replacing the previous temporary
  results layer unless that one was kept;
- ``export_results_layer`` writes a GeoPackage with ``QgsVectorFileWriter`` (no second GDAL) and
  saves the layer style into it (``layer_styles`` table) as the default, so it opens styled. The
  file is written beside the target and renamed onto it once complete. The style leaves out the
  plugin's results marker, so an exported layer added to a map is never removed as a temporary one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsClassificationEqualInterval,
    QgsFeature,
    QgsFeatureRequest,
    QgsField,
    QgsFields,
    QgsFillSymbol,
    QgsGeometry,
    QgsGradientColorRamp,
    QgsGraduatedSymbolRenderer,
    QgsPalLayerSettings,
    QgsPointXY,
    QgsProject,
    QgsProperty,
    QgsSymbolLayer,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtCore import QDateTime, QMetaType, QVariant
from qgis.PyQt.QtGui import QColor, QFont
from qgis.PyQt.QtXml import QDomDocument

from ..core.cache import atomic_path
from ..core.errors import ExportError
from ..core.export import FIELDS, result_polygons
from ..core.search import SearchResult
from .crs import crs_from_string

__all__ = ["RESULTS_PROPERTY", "KEPT_PROPERTY", "EXPORT_LAYER_NAME", "results_layer", "style_results_layer",
           "show_results_layer", "results_layers", "remove_temporary_results", "export_results_layer",
           "result_fields"]

log = logging.getLogger(__name__)

RESULTS_PROPERTY = "rs_text_search/results"
KEPT_PROPERTY = "rs_text_search/kept"
EXPORT_LAYER_NAME = "rs_text_search_results"
STYLE_NAME = "rs_text_search"
LOW_SCORE_COLOUR, HIGH_SCORE_COLOUR = QColor("#ffe76a"), QColor("#e3122b")  # yellow -> red
SCORE_CLASSES = 5
# QgsField takes QMetaType types from QGIS 3.38 (Qt6 builds have no QVariant.Type); older ones need QVariant's.
if Qgis.QGIS_VERSION_INT >= 33800:
    _FIELD_TYPES = {"int": QMetaType.Type.Int, "float": QMetaType.Type.Double, "str": QMetaType.Type.QString,
                    "datetime": QMetaType.Type.QDateTime}
else:
    _FIELD_TYPES = {"int": QVariant.Type.Int, "float": QVariant.Type.Double, "str": QVariant.Type.String,
                    "datetime": QVariant.Type.DateTime}


def result_fields() -> QgsFields:
    """The engine's export fields (name and type, in order) as ``QgsFields``."""
    out = QgsFields()
    for name, kind in FIELDS:
        out.append(QgsField(name, _FIELD_TYPES[kind]))
    return out


def result_features(results: Sequence[SearchResult], query: str, model_name: str, model_sha256: str,
                    fields: QgsFields | None = None) -> tuple[list[QgsFeature], str | None]:
    """Features (polygons + provenance attributes) and the CRS they are in (WKT, None for pixels)."""
    fields = fields or result_fields()
    if not results:
        return [], None
    rings, crs_wkt = result_polygons(results)
    now = QDateTime.currentDateTimeUtc()
    features = []
    for result, ring in zip(results, rings):
        feature = QgsFeature(fields)
        points = [QgsPointXY(x, y) for x, y in ring]
        feature.setGeometry(QgsGeometry.fromPolygonXY([points + points[:1]]))
        values = {"rank": result.rank, "score": float(result.score), "query": query, "tile_id": result.tile_id,
                  "raster": result.raster, "model_name": model_name, "model_sha256": model_sha256, "time": now}
        feature.setAttributes([values[name] for name, _ in FIELDS])
        features.append(feature)
    return features, crs_wkt


def results_layer(results: Sequence[SearchResult], query: str, model_name: str, model_sha256: str,
                  name: str | None = None) -> QgsVectorLayer:
    """A styled memory layer of the result tiles, marked with the ``rs_text_search/results`` property."""
    features, crs_wkt = result_features(results, query, model_name, model_sha256)
    layer = QgsVectorLayer("Polygon", name or f"Search: {query}", "memory")
    if crs_wkt:
        layer.setCrs(crs_from_string(crs_wkt))
    provider = layer.dataProvider()
    provider.addAttributes(result_fields().toList())
    layer.updateFields()
    provider.addFeatures(features)
    layer.updateExtents()
    layer.setCustomProperty(RESULTS_PROPERTY, True)
    style_results_layer(layer)
    return layer


def style_results_layer(layer: QgsVectorLayer) -> None:
    """Graduated yellow-to-red by score (translucent fill, solid outline), best on top, rank labels."""
    symbol = QgsFillSymbol.createSimple({"color": "255,0,0,70", "outline_color": "255,0,0,255",
                                         "outline_width": "0.7", "outline_width_unit": "MM"})
    fill = symbol.symbolLayer(0)
    # The class colour paints a translucent fill and an opaque outline, so the imagery shows through.
    fill.setDataDefinedProperty(QgsSymbolLayer.Property.PropertyFillColor,
                                QgsProperty.fromExpression("set_color_part(@symbol_color, 'alpha', 60)"))
    fill.setDataDefinedProperty(QgsSymbolLayer.Property.PropertyStrokeColor,
                                QgsProperty.fromExpression("@symbol_color"))
    renderer = QgsGraduatedSymbolRenderer("score")
    renderer.setClassificationMethod(QgsClassificationEqualInterval())
    renderer.setSourceSymbol(symbol)
    renderer.setSourceColorRamp(QgsGradientColorRamp(LOW_SCORE_COLOUR, HIGH_SCORE_COLOUR))
    if layer.featureCount() > 0:
        renderer.updateClasses(layer, SCORE_CLASSES)
    renderer.setOrderBy(QgsFeatureRequest.OrderBy([QgsFeatureRequest.OrderByClause("score", True)]))
    renderer.setOrderByEnabled(True)
    layer.setRenderer(renderer)

    text = QgsTextFormat()
    font = QFont()
    font.setBold(True)
    text.setFont(font)
    text.setSize(10)
    text.setColor(QColor("#1b1b1b"))
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(1.2)
    buffer.setColor(QColor(255, 255, 255, 230))
    text.setBuffer(buffer)
    labels = QgsPalLayerSettings()
    labels.fieldName = "rank"
    labels.placement = QgsPalLayerSettings.Placement.OverPoint
    labels.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    layer.setLabelsEnabled(True)
    layer.triggerRepaint()


def results_layers(project: QgsProject | None = None) -> list[QgsVectorLayer]:
    """The plugin's own results layers: memory layers it marked. A file (an export) is the analyst's data,
    even when an older export's saved style carries the mark."""
    project = project or QgsProject.instance()
    return [layer for layer in project.mapLayers().values() if layer.customProperty(RESULTS_PROPERTY, False)
            in (True, "true", 1) and layer.providerType() == "memory"]


def remove_temporary_results(project: QgsProject | None = None) -> None:
    """Remove results layers that the analyst did not keep."""
    project = project or QgsProject.instance()
    doomed = [layer.id() for layer in results_layers(project)
              if layer.customProperty(KEPT_PROPERTY, False) not in (True, "true", 1)]
    if doomed:
        project.removeMapLayers(doomed)


def show_results_layer(layer: QgsVectorLayer, keep_previous: bool, project: QgsProject | None = None) -> None:
    """Add ``layer`` on top of the layer tree; the previous temporary results go unless kept."""
    project = project or QgsProject.instance()
    if keep_previous:
        for previous in results_layers(project):
            previous.setCustomProperty(KEPT_PROPERTY, True)
    else:
        remove_temporary_results(project)
    project.addMapLayer(layer, False)
    project.layerTreeRoot().insertLayer(0, layer)


def export_results_layer(layer: QgsVectorLayer, path: str | os.PathLike, add_to_project: bool = False,
                         project: QgsProject | None = None) -> Path:
    """Write a results layer to a GeoPackage with its style as the default; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        path = path.with_suffix(".gpkg")
    if layer is None or not layer.isValid() or layer.featureCount() == 0:
        raise ExportError("There are no results to export; run a search first.")
    if not path.parent.is_dir():
        raise ExportError(f"The folder '{path.parent}' does not exist.")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ExportError(f"'{path}' cannot be written (no permission).")
    project = project or QgsProject.instance()
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = EXPORT_LAYER_NAME
    options.fileEncoding = "UTF-8"
    with atomic_path(path) as tmp:
        error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(tmp), project.transformContext(),
                                                                         options)
        if error != QgsVectorFileWriter.WriterError.NoError:
            raise ExportError(f"Writing '{path}' failed: {message}")
        _save_style(layer, tmp)
        for suffix in ("-wal", "-shm"):  # the writer's connection must be closed before the rename
            if Path(f"{tmp}{suffix}").exists():
                log.warning("GeoPackage side file %s%s still present after export", tmp, suffix)
    if add_to_project:
        exported = QgsVectorLayer(f"{path}|layername={EXPORT_LAYER_NAME}", path.stem, "ogr")
        if not exported.isValid():
            raise ExportError(f"'{path}' was written but QGIS cannot open it again.")
        project.addMapLayer(exported)
    return path


def _save_style(layer: QgsVectorLayer, gpkg: Path) -> None:
    written = QgsVectorLayer(f"{gpkg}|layername={EXPORT_LAYER_NAME}", EXPORT_LAYER_NAME, "ogr")
    if not written.isValid():
        raise ExportError(f"The GeoPackage '{gpkg.name}' was written but cannot be opened to store its style.")
    document = QDomDocument()
    layer.exportNamedStyle(document)
    written.importNamedStyle(document)
    for marker in (RESULTS_PROPERTY, KEPT_PROPERTY):  # the saved style must not make the export 'temporary'
        written.removeCustomProperty(marker)
    problem = written.saveStyleToDatabase(STYLE_NAME, "Search results: colour by score, labelled by rank",
                                          True, "")
    del written
    if problem:
        raise ExportError(f"The results were written but their style could not be stored: {problem}")
