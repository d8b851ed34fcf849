"""What the dock, the map tool and the menu actions ask for, with no widgets of its own.

The controller owns the engine, the running tasks (a Python reference to each until it finished),
the current result set with its good/bad marks, and the temporary results layer. It turns every
problem into one sentence on the message bar. The dock only renders its state and forwards clicks.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsMapLayer, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import QObject, pyqtSignal
from qgis.PyQt.QtGui import QImage

from ..core.errors import ModelError, RasterError, RsTextSearchError
from ..core.search import SearchResult
from . import canvas as canvas_tools
from . import layers as result_layers
from . import messages
from .crs import qgis_transforms
from .deps import missing_sentence
from .engine import Engine, ModelInfo
from .layer_states import LayerState, layer_states, project_rasters
from .settings import PluginSettings
from .source import QgisRasterSource, is_online, layer_ground_m, lookup_identity
from .tasks import IndexTask, SearchRequest, SearchTask

__all__ = ["Controller", "LayerState"]

log = logging.getLogger(__name__)

MESSAGE_TITLE = "RS Text Search"
INFO, SUCCESS, WARNING, CRITICAL = (Qgis.MessageLevel.Info, Qgis.MessageLevel.Success, Qgis.MessageLevel.Warning,
                                    Qgis.MessageLevel.Critical)
_LOG_LEVELS = {CRITICAL: logging.ERROR, WARNING: logging.WARNING}


class Controller(QObject):
    """State and actions of one plugin session; ``shutdown()`` undoes everything it set up."""

    resultsChanged = pyqtSignal()
    marksChanged = pyqtSignal()
    indexingChanged = pyqtSignal()
    layersChanged = pyqtSignal()
    modelChanged = pyqtSignal()
    searchingChanged = pyqtSignal(bool)

    def __init__(self, iface, missing_dependencies: list[str] | None = None) -> None:
        super().__init__()
        self.iface = iface
        self.missing = list(missing_dependencies or [])
        self.engine = Engine()
        self.settings = PluginSettings.load()
        self.results: list[SearchResult] = []
        self.thumbnails: dict[str, QImage] = {}
        self.request: SearchRequest | None = None
        self.marks: dict[str, int] = {}  # tile id -> +1 good / -1 bad
        self._layer_names: dict[str, str] = {}  # index key prefix (tile id prefix) -> project layer name
        self.keep_results = False
        self.results_layer_id: str | None = None
        self.index_task: IndexTask | None = None
        self.search_task: SearchTask | None = None
        self._tasks: set = set()
        self._generation = 0  # bumped when the project is cleared: late task results are dropped
        self._highlight = canvas_tools.Highlight(iface.mapCanvas())
        project = QgsProject.instance()
        self._connections = [(project.cleared, self._on_project_cleared),
                             (project.layersAdded, self._on_layers_changed),
                             (project.layersRemoved, self._on_layers_changed)]
        for signal, slot in self._connections:
            signal.connect(slot)

    # -- lifetime -----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Cancel and wait for tasks, disconnect, remove the temporary results layer and highlights."""
        for signal, slot in self._connections:
            with contextlib.suppress(TypeError, RuntimeError):
                signal.disconnect(slot)
        self._connections = []
        self._generation += 1
        for task in list(self._tasks):
            try:
                if isinstance(task, IndexTask):
                    task.progressChanged.disconnect(self._on_index_progress)
                task.cancel()
                task.waitForFinished(10_000)
            except (RuntimeError, TypeError):  # already deleted by the task manager, or never connected
                pass
        self._highlight.clear()
        result_layers.remove_temporary_results()
        self.results_layer_id = None

    def message(self, text: str, level: Qgis.MessageLevel = WARNING, seconds: int = 8) -> None:
        log.log(_LOG_LEVELS.get(level, logging.INFO), text)
        messages.push(self.iface.messageBar(), MESSAGE_TITLE, text, level, seconds)

    def _ready(self) -> bool:
        if self.missing:
            self.message(f"{missing_sentence(self.missing)}; use 'Install missing dependencies…' in the plugin "
                         "menu, then restart QGIS.", CRITICAL)
            return False
        return True

    def set_settings(self, settings: PluginSettings) -> None:
        self.settings = settings
        settings.save()
        self.engine.forget_model()
        self.modelChanged.emit()
        self.layersChanged.emit()

    def model_info(self, quiet: bool = False) -> ModelInfo | None:
        try:
            return self.engine.model_info(self.settings)
        except (ModelError, OSError) as exc:
            if not quiet:
                hint = "" if "settings" in str(exc) else " Choose a model folder in the RS Text Search settings."
                self.message(f"{exc}{hint}", CRITICAL)
            return None

    # -- layers and their indexes --------------------------------------------------------------
    def raster_layers(self) -> list[QgsRasterLayer]:
        return project_rasters()

    def layer_states(self) -> list[tuple[QgsRasterLayer, str]]:
        return layer_states(self.engine, self.settings, self.model_info(quiet=True))

    def _on_layers_changed(self, *_) -> None:
        self.layersChanged.emit()

    def _on_project_cleared(self) -> None:
        self._generation += 1
        self.results, self.thumbnails, self.marks, self.request = [], {}, {}, None
        self.results_layer_id = None
        self._highlight.clear()
        self.resultsChanged.emit()
        self.layersChanged.emit()

    # -- indexing ------------------------------------------------------------------------------
    def index_layers(self, layers: list[QgsMapLayer]) -> IndexTask | None:
        """Start indexing ``layers`` in the background; returns the task (or None with a message)."""
        if not self._ready():
            return None
        if self.index_task is not None:
            self.message("Indexing is already running; wait for it or cancel it first.", INFO)
            return None
        if not layers:
            self.message("Choose at least one raster layer to index.", INFO)
            return None
        if self.model_info() is None:
            return None
        sources, kept_layers = [], []
        for layer in layers:
            try:
                extent, resolution = self._online_view(layer) if isinstance(layer, QgsRasterLayer) and \
                    layer.isValid() and is_online(layer) else (None, None)
                sources.append(QgisRasterSource(layer, extent, resolution))
                kept_layers.append(layer)
            except RasterError as exc:
                self.message(str(exc))
                continue
            if sources[-1].crs_wkt is None:
                self.message(f"'{layer.name()}' has no CRS; its tiles are located in the layer's own "
                             "coordinates and cannot be searched together with georeferenced layers.", INFO)
        if not sources:
            return None
        task = IndexTask(self.engine, replace(self.settings), sources, kept_layers, self._index_finished)
        task.progressChanged.connect(self._on_index_progress)
        self.index_task = task
        self._start(task)
        self.indexingChanged.emit()
        return task

    def _on_index_progress(self, _value: float) -> None:
        self.indexingChanged.emit()

    def _online_view(self, layer: QgsRasterLayer) -> tuple[QgsRectangle, float]:
        """Online layers are indexed over the current map extent at the current map resolution."""
        canvas = self.iface.mapCanvas()
        extent = canvas_tools.to_layer_crs(canvas, canvas.extent(), layer.crs())
        resolution = extent.width() / max(1, canvas.width())
        return extent, resolution

    def cancel_indexing(self) -> None:
        if self.index_task is not None:
            self.index_task.cancel()

    def _start(self, task) -> None:
        task.generation = self._generation
        self._tasks.add(task)
        QgsApplication.taskManager().addTask(task)

    def _index_finished(self, task: IndexTask) -> None:
        self._tasks.discard(task)
        if task is self.index_task:
            self.index_task = None
        if task.generation != self._generation:
            task.sources = []
            if self._connections:  # still loaded: the project was closed while indexing
                self.message("The project was closed while indexing. "
                             + (task.cancelled_message or "Finished layers stay indexed."), INFO)
                self.indexingChanged.emit()
                self.layersChanged.emit()
            return
        if task.model_provider:
            self.modelChanged.emit()
        for outcome in task.outcomes:
            if outcome.error:
                self.message(outcome.error)
            elif outcome.stats is not None:
                stats = outcome.stats
                skipped = stats.tiles_skipped_nodata + stats.tiles_skipped_constant
                far = outcome.tiles is not None and outcome.tiles.far
                self.message(f"'{outcome.layer_name}' is indexed: {stats.tiles_embedded} tiles searchable"
                             + (f", {skipped} empty tiles skipped" if skipped else "")
                             + (f" (resumed after {stats.tiles_done_before} tiles)" if 0 < stats.tiles_done_before
                                < stats.tiles_total else "")
                             + (f"; {outcome.tiles.why}" if outcome.tiles else "") + ".",
                             WARNING if far else SUCCESS, 10 if far else 5)
        if task.error:
            self.message(task.error, CRITICAL)
        elif task.cancelled_message or (not task.succeeded and not task.outcomes and task.isCanceled()):
            text = task.cancelled_message or "Indexing was cancelled before it started."
            self.message(f"{text} Index the layer again to resume.", INFO)
        for source in task.sources:
            source.close()
        task.sources = []
        self.indexingChanged.emit()
        self.layersChanged.emit()

    # -- searching -----------------------------------------------------------------------------
    def search_text(self, text: str, extent_only: bool = False) -> SearchTask | None:
        text = text.strip()
        if not text:
            self.message("Type what to look for, e.g. 'parking lot with cars' or 'farm fields'.", INFO)
            return None
        self._clear_marks()
        return self.search(SearchRequest(texts=[text], label=text), extent_only)

    def find_similar(self, tile_ids: list[str], extent_only: bool = False) -> SearchTask | None:
        self._clear_marks()
        label = "similar to " + ", ".join(tile_ids)
        return self.search(SearchRequest(tiles=list(tile_ids), label=label), extent_only)

    def find_similar_at(self, x: float, y: float, crs: str, extent_only: bool = False) -> SearchTask | None:
        self._clear_marks()
        return self.search(SearchRequest(point=(x, y, crs), label=f"similar to the tile at {x:.6g}, {y:.6g}"),
                           extent_only)

    def _clear_marks(self) -> None:
        if self.marks:
            self.marks = {}
            self.marksChanged.emit()

    def mark(self, tile_id: str, value: int) -> None:
        """+1 good, -1 bad, 0 clears the mark."""
        if value:
            self.marks[tile_id] = value
        else:
            self.marks.pop(tile_id, None)
        self.marksChanged.emit()

    def refine(self, extent_only: bool = False) -> SearchTask | None:
        if self.request is None or not self.marks:
            self.message("Mark some results as good or bad first (right-click a result).", INFO)
            return None
        good = [t for t, v in self.marks.items() if v > 0]
        bad = [t for t, v in self.marks.items() if v < 0]
        base = self.request
        request = replace(base, tiles=list(dict.fromkeys(base.tiles + good)),
                          negative_tiles=list(dict.fromkeys(base.negative_tiles + bad)),
                          label=f"{base.label.split(' (+')[0]} (+{len(good)} good, -{len(bad)} bad)")
        return self.search(request, extent_only)

    def search(self, request: SearchRequest, extent_only: bool = False) -> SearchTask | None:
        if not self._ready():
            return None
        info = self.model_info()
        if info is None:
            return None
        indexes, sources = [], {}
        candidates = self.engine.all_indexes(info.sha256)
        for layer in self.raster_layers():
            try:
                found = self.engine.indexes_for(lookup_identity(layer), info, self.settings, candidates,
                                                layer_ground_m(layer))
            except RasterError:
                continue
            for index in found:
                indexes.append(index)
                self._layer_names[index.key[:8]] = layer.name()
                thumbnails = _thumbnail_source(layer, index)
                if thumbnails is not None:
                    sources[index.key[:8]] = thumbnails
        if not indexes:
            self.message(f"No layer of this project is indexed with the model '{info.name}' yet; click "
                         "'Index layers…' first.", INFO)
            return None
        request.top_k, request.min_score = self.settings.top_k, self.settings.min_score_or_none
        request.bbox = request.bbox_crs = None
        if extent_only:
            canvas = self.iface.mapCanvas()
            extent = canvas.extent()
            request.bbox = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
            request.bbox_crs = canvas_tools.crs_string(canvas.mapSettings().destinationCrs())
        if self.search_task is not None:
            self.search_task.cancel()
        task = SearchTask(self.engine, replace(self.settings), request, indexes, sources, qgis_transforms(),
                          self._search_finished)
        self.search_task = task
        self._start(task)
        self.searchingChanged.emit(True)
        return task

    def _search_finished(self, task: SearchTask) -> None:
        self._tasks.discard(task)
        if task is not self.search_task:
            return  # a newer search replaced it
        self.search_task = None
        if task.generation != self._generation:
            log.info("search finished after the project was closed or the plugin unloaded; results dropped")
            if self._connections:  # still loaded: the search button comes back
                self.searchingChanged.emit(False)
            return
        self.searchingChanged.emit(False)
        if task.model_provider:
            self.modelChanged.emit()
        if not task.succeeded:
            if task.error:
                self.message(task.error, WARNING)
            return
        request = task.request
        if task.example_tile:
            request = replace(request, tiles=request.tiles + [task.example_tile], point=None)
        self.request, self.results, self.thumbnails = request, task.results, task.thumbnails
        self._highlight.clear()  # the outlined tile belonged to the previous results
        self._show_layer(task)
        self.resultsChanged.emit()
        for sentence in task.skipped:  # the other rasters were searched
            self.message(sentence, WARNING)
        if not task.results:
            self.message("No tile matched"
                         + (" above the minimum score" if request.min_score is not None else "")
                         + (" inside the map extent" if request.bbox else "") + ".", INFO)

    def _show_layer(self, task: SearchTask) -> None:
        if not task.results:  # an empty answer must not leave the previous matches on the map
            if not self.keep_results:
                result_layers.remove_temporary_results()
            self.results_layer_id = None
            return
        try:
            layer = result_layers.results_layer(task.results, task.request.label, task.model_name or "",
                                                self.loaded_model_sha() or "")
        except RsTextSearchError as exc:
            self.message(str(exc))
            return
        result_layers.show_results_layer(layer, keep_previous=self.keep_results)
        self.results_layer_id = layer.id()

    def layer_name(self, result: SearchResult) -> str:
        """The name of the project layer a result comes from (the indexed name if it is gone)."""
        return self._layer_names.get(result.tile_id.split(":")[0], result.raster_name)

    def loaded_model_sha(self) -> str | None:
        model = self.engine.loaded_model
        return model.sha256 if model else None

    def results_layer(self):
        return QgsProject.instance().mapLayer(self.results_layer_id) if self.results_layer_id else None

    # -- map interaction -----------------------------------------------------------------------
    def show_result(self, result: SearchResult) -> None:
        """Zoom to a result tile and flash it."""
        canvas_tools.zoom_and_flash(self.iface.mapCanvas(), result, self._highlight)

    # -- export --------------------------------------------------------------------------------
    def export(self, path: str, add_to_project: bool) -> Path | None:
        layer = self.results_layer()
        try:
            written = result_layers.export_results_layer(layer, path, add_to_project)
        except RsTextSearchError as exc:
            self.message(str(exc))
            return None
        self.message(f"Results written to {written}.", SUCCESS, 5)
        return written


def _thumbnail_source(layer: QgsRasterLayer, index) -> QgisRasterSource | None:
    """A reader for thumbnails on the index's own pixel grid (online layers: the indexed extent)."""
    try:
        if not is_online(layer):
            return QgisRasterSource(layer, reader_handles=0)
        identity = index.meta["raster"]["identity"]
        (x0, y0), (res_x, res_y) = identity["origin"], identity["resolution"]
        extent = QgsRectangle(x0, y0 - identity["height"] * res_y, x0 + identity["width"] * res_x, y0)
        return QgisRasterSource(layer, extent, res_x, reader_handles=0)
    except (RasterError, KeyError, ValueError) as exc:
        log.info("no thumbnails for %s: %s", layer.name(), exc)
        return None
