"""Which raster layers of the project are indexed with the current model and tile grid. No widgets.

A layer is *indexed* when an index of it exists for the model and the grid the settings ask for;
*indexed with another tile size* when only an older grid's index exists (still searchable; the
chooser ticks it, so indexing makes the current grid's); *partly indexed* when a cancelled run of
the current grid waits to resume; else *not indexed*, or *unreadable* when QGIS cannot read it.
"""

from __future__ import annotations

from qgis.core import QgsProject, QgsRasterLayer

from ..core.errors import RasterError
from .engine import Engine, ModelInfo
from .settings import PluginSettings
from .source import layer_ground_m, lookup_identity, partial_index_exists

__all__ = ["LayerState", "layer_states", "project_rasters"]


class LayerState:
    INDEXED, PARTIAL, NOT_INDEXED, UNREADABLE = "indexed", "partly indexed", "not indexed", "unreadable"
    OTHER_GRID = "indexed with another tile size"


def project_rasters() -> list[QgsRasterLayer]:
    """Raster layers of the project in layer-tree order (layers not in the tree last)."""
    project = QgsProject.instance()
    ordered = [node.layer() for node in project.layerTreeRoot().findLayers() if node.layer() is not None]
    ordered += [layer for layer in project.mapLayers().values() if layer not in ordered]
    return [layer for layer in ordered if isinstance(layer, QgsRasterLayer)]


def layer_states(engine: Engine, settings: PluginSettings, info: ModelInfo | None) -> list[tuple[QgsRasterLayer, str]]:
    """(layer, state) for every raster layer of the project; ``info`` None: no model, nothing indexed."""
    candidates = engine.all_indexes(info.sha256) if info else []
    states = []
    for layer in project_rasters():
        try:
            identity = lookup_identity(layer)
        except RasterError:
            states.append((layer, LayerState.UNREADABLE))
            continue
        if info is None:
            states.append((layer, LayerState.NOT_INDEXED))
            continue
        ground_m = layer_ground_m(layer)
        if engine.indexes_for(identity, info, settings, candidates, ground_m, current_grid_only=True):
            states.append((layer, LayerState.INDEXED))
        elif partial_index_exists(identity, info.sha256, info.grid(settings, ground_m).to_dict()):
            states.append((layer, LayerState.PARTIAL))
        elif engine.indexes_for(identity, info, settings, candidates, ground_m):
            states.append((layer, LayerState.OTHER_GRID))
        else:
            states.append((layer, LayerState.NOT_INDEXED))
    return states
