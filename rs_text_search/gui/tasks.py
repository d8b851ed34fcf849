"""Background work as ``QgsTask``: indexing layers and searching, off the GUI thread.

Discipline (STYLE.md): ``run()`` works on copies only (``QgisRasterSource`` objects holding
cloned providers, settings values, index folders), checks ``isCanceled()`` once per batch
through the engine's ``is_cancelled`` callback and records its outcome on the task; ``finished()``
runs in the GUI thread and hands the task to a callback, the only code that touches layers, the
canvas or the message bar. Callers keep a Python reference to each task until it finished.

Cancelling indexing keeps every finished batch (the engine commits one transaction per batch);
indexing the same layer again resumes after them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import QgsMapLayer, QgsTask
from qgis.PyQt.QtGui import QImage

from ..core.errors import Cancelled, RsTextSearchError
from ..core.index import TileIndex
from ..core.indexing import IndexingStats, TileSize, build_index, choose_tile_size
from ..core.search import Searcher, SearchResult
from ..core.tiling import GridSpec, Window
from .engine import Engine
from .settings import PluginSettings
from .source import QgisRasterSource

__all__ = ["IndexTask", "SearchTask", "SearchRequest", "IndexOutcome", "THUMBNAIL_PX"]

log = logging.getLogger(__name__)

THUMBNAIL_PX = 72


def _unexpected(what: str, exc: BaseException) -> str:
    log.exception("%s failed", what)
    return f"{what} failed unexpectedly ({type(exc).__name__}: {exc}); the details are in the log panel."


@dataclass
class IndexOutcome:
    """What happened to one layer of an indexing task."""

    layer_id: str
    layer_name: str
    index_dir: Path | None = None
    stats: IndexingStats | None = None
    error: str | None = None
    tiles: TileSize | None = None  # the tile side used, and why


class _Task(QgsTask):
    """Common part: a GUI-thread callback run once from ``finished()``."""

    def __init__(self, description: str, on_finished: Callable[[_Task], None] | None) -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self._on_finished = on_finished
        self.error: str | None = None
        self.model_name: str | None = None
        self.model_provider: str | None = None
        self.succeeded = False
        self.seconds = 0.0

    def finished(self, result: bool) -> None:  # GUI thread
        self.succeeded = bool(result)
        callback, self._on_finished = self._on_finished, None
        if callback is not None:
            try:
                callback(self)
            except Exception:  # an exception escaping finished() would abort QGIS
                log.exception("handling the end of task '%s' failed", self.description())


class IndexTask(_Task):
    """Index several layers one after the other with the configured model and grid."""

    def __init__(self, engine: Engine, settings: PluginSettings, sources: Sequence[QgisRasterSource],
                 layers: Sequence[QgsMapLayer], on_finished: Callable[[IndexTask], None] | None = None,
                 root: Path | None = None, batch_size: int | None = None) -> None:
        names = ", ".join(f"'{s.name}'" for s in sources[:3]) + (" ..." if len(sources) > 3 else "")
        super().__init__(f"Indexing {names} for text search", on_finished)
        self.engine, self.settings, self.sources = engine, settings, list(sources)
        self.root, self.batch_size = root, batch_size
        self.outcomes: list[IndexOutcome] = []
        self.cancelled_message: str | None = None
        self.status_text = "waiting to start"
        # QGIS cancels the task when one of these layers is removed (e.g. the project is closed).
        self.setDependentLayers(list(layers))

    def run(self) -> bool:  # worker thread
        started = time.perf_counter()
        try:
            model = self.engine.model(self.settings)
        except RsTextSearchError as exc:
            self.error = str(exc)
            return False
        except Exception as exc:  # onnxruntime raises its own types
            self.error = _unexpected("Loading the model", exc)
            return False
        self.model_name, self.model_provider = model.name, model.provider
        count = len(self.sources)
        for position, source in enumerate(self.sources):
            outcome = IndexOutcome(source.layer_id, source.name)
            if self.isCanceled():
                self.cancelled_message = f"Indexing was cancelled before '{source.name}' started."
                break

            def progress(done: int, total: int, position: int = position, name: str = source.name) -> None:
                self.status_text = f"{name}: {done} of {total} tiles"
                self.setProgress(100.0 * (position + done / max(total, 1)) / count)

            try:
                outcome.tiles = choose_tile_size(source, model, self.settings.tile_size_px)
                grid = GridSpec(outcome.tiles.px, self.settings.overlap)
                index, stats = build_index(source, model, grid, root=self.root, progress=progress,
                                           is_cancelled=self.isCanceled, batch_size=self.batch_size)
                outcome.index_dir, outcome.stats = index.directory, stats
                self.outcomes.append(outcome)
            except Cancelled as exc:
                self.cancelled_message = str(exc)
                break
            except RsTextSearchError as exc:
                outcome.error = str(exc)
                self.outcomes.append(outcome)
            except Exception as exc:
                outcome.error = _unexpected(f"Indexing '{source.name}'", exc)
                self.outcomes.append(outcome)
        self.seconds = time.perf_counter() - started
        return self.cancelled_message is None and all(o.error is None for o in self.outcomes)


@dataclass
class SearchRequest:
    """One query: positives and negatives (texts and tile ids), limits and an optional box or point."""

    texts: list[str] = field(default_factory=list)
    tiles: list[str] = field(default_factory=list)
    negative_texts: list[str] = field(default_factory=list)
    negative_tiles: list[str] = field(default_factory=list)
    top_k: int = 20
    min_score: float | None = None
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str | None = None
    point: tuple[float, float, str] | None = None  # x, y, CRS: "the tile under this point"
    label: str = ""


class SearchTask(_Task):
    """Run one query over finished indexes and read a thumbnail of every result."""

    def __init__(self, engine: Engine, settings: PluginSettings, request: SearchRequest,
                 indexes: Sequence[TileIndex], thumbnail_sources: dict[str, QgisRasterSource],
                 transforms: tuple, on_finished: Callable[[SearchTask], None] | None = None) -> None:
        super().__init__(f"Searching: {request.label}", on_finished)
        self.engine, self.settings, self.request = engine, settings, request
        self.indexes = list(indexes)
        self.thumbnail_sources = thumbnail_sources  # index key prefix (tile id prefix) -> source
        self.transforms = transforms
        self.results: list[SearchResult] = []
        self.thumbnails: dict[str, QImage] = {}
        self.example_tile: str | None = None
        self.skipped: list[str] = []  # one sentence per damaged index left out of the search

    def run(self) -> bool:  # worker thread
        started = time.perf_counter()
        try:
            model = self.engine.model(self.settings)
            self.model_name, self.model_provider = model.name, model.provider
            searcher = Searcher(model, self.indexes, transform_bounds=self.transforms[0],
                                transform_point=self.transforms[1])
            self.skipped = searcher.skipped
            request = self.request
            tiles = list(request.tiles)
            if request.point is not None:
                self.example_tile = searcher.tile_at(*request.point)
                tiles.append(self.example_tile)
            self.results = searcher.search(texts=request.texts, tiles=tiles, negative_texts=request.negative_texts,
                                           negative_tiles=request.negative_tiles, top_k=request.top_k,
                                           min_score=request.min_score, bbox=request.bbox, bbox_crs=request.bbox_crs)
        except RsTextSearchError as exc:
            self.error = str(exc)
            return False
        except Exception as exc:
            self.error = _unexpected("The search", exc)
            return False
        for result in self.results:
            if self.isCanceled():
                return False
            self.thumbnails[result.tile_id] = self._thumbnail(result)
        self.seconds = time.perf_counter() - started
        return True

    def _thumbnail(self, result: SearchResult) -> QImage:
        source = self.thumbnail_sources.get(result.tile_id.split(":")[0])
        if source is None:
            return QImage()
        try:
            rgb = source.read(Window(*result.window), THUMBNAIL_PX)
        except Exception as exc:  # a thumbnail is a nicety: never fail the search for it
            log.warning("no thumbnail for %s: %s", result.tile_id, exc)
            return QImage()
        height, width = rgb.shape[:2]
        return QImage(rgb.tobytes(), width, height, 3 * width, QImage.Format.Format_RGB888).copy()
