"""The search panel: query, limits, scope, results list with thumbnails, indexing and export.

A thin client of ``Controller``: every button calls one controller method and every controller
signal re-renders a part of the panel. Object names used by checks from outside: the dock
``RsTextSearchDock``; ``queryEdit``, ``searchButton``, ``topKSpin``, ``resultsView``,
``indexButton``, ``exportButton``, ``providerLabel``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from qgis.core import Qgis, QgsProject, QgsVectorLayer
from qgis.gui import QgsDockWidget
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import messages
from .chooser import LayerChooser
from .controller import Controller, LayerState
from .deps import missing_sentence
from .layers import EXPORT_LAYER_NAME
from .meta import PLUGIN_NAME, tr
from .results import ResultsView
from .settings import NO_MIN_SCORE

__all__ = ["SearchDock", "DOCK_OBJECT_NAME"]

DOCK_OBJECT_NAME = "RsTextSearchDock"
SCOPE_ALL, SCOPE_EXTENT = 0, 1


class SearchDock(QgsDockWidget):
    """The dock panel; ``installRequested`` and ``settingsRequested`` are handled by the plugin."""

    installRequested = pyqtSignal()
    settingsRequested = pyqtSignal()

    def __init__(self, controller: Controller, parent: QWidget | None = None) -> None:
        super().__init__(PLUGIN_NAME, parent)
        self.setObjectName(DOCK_OBJECT_NAME)
        self.controller = controller
        self.chooser: LayerChooser | None = None
        body = QWidget(self)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(6)
        self._build_dependency_banner(layout)
        self._build_query(layout)
        self._build_results(layout)
        self._build_indexing(layout)
        self.setWidget(body)
        self._connections = [
            (controller.resultsChanged, self._render_results), (controller.marksChanged, self._render_marks),
            (controller.indexingChanged, self._render_indexing), (controller.layersChanged, self._render_layers),
            (controller.modelChanged, self._render_model), (controller.searchingChanged, self._render_searching),
        ]
        for signal, slot in self._connections:
            signal.connect(slot)
        self._render_model()
        self._render_layers()
        self._render_indexing()
        self._render_results()
        self._render_searching(False)

    def disconnect_controller(self) -> None:
        for signal, slot in self._connections:
            with contextlib.suppress(TypeError, RuntimeError):
                signal.disconnect(slot)
        self._connections = []
        if self.chooser is not None:
            self.chooser.close()
            self.chooser.deleteLater()
            self.chooser = None

    # -- building ------------------------------------------------------------------------------
    def _build_dependency_banner(self, layout: QVBoxLayout) -> None:
        self.dependencyBanner = QWidget()
        row = QHBoxLayout(self.dependencyBanner)
        row.setContentsMargins(0, 0, 0, 0)
        missing = self.controller.missing
        text = QLabel(f"{missing_sentence(missing)}: indexing and searching are off until "
                      f"{'it is' if len(missing) == 1 else 'they are'} installed." if missing else "")
        text.setObjectName("dependencyText")
        text.setWordWrap(True)
        text.setStyleSheet("color: #9a3412;")
        install = QPushButton(tr("Install…"))
        install.setObjectName("installButton")
        install.clicked.connect(self.installRequested)
        row.addWidget(text, 1)
        row.addWidget(install)
        self.dependencyBanner.setVisible(bool(self.controller.missing))
        layout.addWidget(self.dependencyBanner)

    def _build_query(self, layout: QVBoxLayout) -> None:
        row = QHBoxLayout()
        self.queryEdit = QLineEdit()
        self.queryEdit.setObjectName("queryEdit")
        self.queryEdit.setPlaceholderText(tr("Describe what to find, e.g. parking lot with cars"))
        self.queryEdit.setClearButtonEnabled(True)
        self.queryEdit.returnPressed.connect(self._search)
        self.searchButton = QPushButton(tr("Search"))
        self.searchButton.setObjectName("searchButton")
        self.searchButton.setDefault(True)
        self.searchButton.clicked.connect(self._search)
        row.addWidget(self.queryEdit, 1)
        row.addWidget(self.searchButton)
        layout.addLayout(row)

        options = QHBoxLayout()
        settings = self.controller.settings
        self.topKSpin = QSpinBox()
        self.topKSpin.setObjectName("topKSpin")
        self.topKSpin.setRange(1, 1000)
        self.topKSpin.setValue(settings.top_k)
        self.topKSpin.setPrefix(tr("top "))
        self.topKSpin.setToolTip(tr("How many tiles to return"))
        self.minScoreSpin = QDoubleSpinBox()
        self.minScoreSpin.setObjectName("minScoreSpin")
        self.minScoreSpin.setRange(NO_MIN_SCORE, 1.0)
        self.minScoreSpin.setSingleStep(0.01)
        self.minScoreSpin.setDecimals(2)
        self.minScoreSpin.setSpecialValueText(tr("any score"))
        self.minScoreSpin.setPrefix("≥ ")
        self.minScoreSpin.setValue(settings.min_score)
        self.minScoreSpin.setToolTip(tr("Hide tiles whose similarity to the query is below this value"))
        self.scopeCombo = QComboBox()
        self.scopeCombo.setObjectName("scopeCombo")
        self.scopeCombo.addItems([tr("All indexed layers"), tr("Map extent only")])
        self.scopeCombo.setToolTip(tr("Where to search"))
        self.topKSpin.valueChanged.connect(self._remember_limits)
        self.minScoreSpin.valueChanged.connect(self._remember_limits)
        options.addWidget(self.topKSpin)
        options.addWidget(self.minScoreSpin)
        options.addWidget(self.scopeCombo, 1)
        layout.addLayout(options)

    def _build_results(self, layout: QVBoxLayout) -> None:
        self.summaryLabel = QLabel()
        self.summaryLabel.setObjectName("summaryLabel")
        self.summaryLabel.setWordWrap(True)
        layout.addWidget(self.summaryLabel)
        self.resultsView = ResultsView(self.controller, self._extent_only)
        layout.addWidget(self.resultsView, 1)

        self.refineBar = QWidget()
        refine = QHBoxLayout(self.refineBar)
        refine.setContentsMargins(0, 0, 0, 0)
        self.marksLabel = QLabel()
        self.marksLabel.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.refineButton = QPushButton(tr("Refine"))
        self.refineButton.setObjectName("refineButton")
        self.refineButton.setToolTip(tr("Search again with the good results as examples and away from the bad ones"))
        self.refineButton.clicked.connect(lambda: self.controller.refine(self._extent_only()))
        clear = QToolButton()
        clear.setText(tr("Clear"))
        clear.setToolTip(tr("Forget the good and bad marks"))
        clear.clicked.connect(self._clear_marks)
        refine.addWidget(self.marksLabel, 1)
        refine.addWidget(clear)
        refine.addWidget(self.refineButton)
        layout.addWidget(self.refineBar)

        row = QHBoxLayout()
        self.keepCheck = QCheckBox(tr("Keep results layer"))
        self.keepCheck.setObjectName("keepCheck")
        self.keepCheck.setToolTip(tr("Keep this results layer on the map when the next search runs"))
        self.keepCheck.toggled.connect(lambda on: setattr(self.controller, "keep_results", on))
        self.exportButton = QPushButton(tr("Export results…"))
        self.exportButton.setObjectName("exportButton")
        self.exportButton.clicked.connect(lambda: self.export_results())
        row.addWidget(self.keepCheck, 1)
        row.addWidget(self.exportButton)
        layout.addLayout(row)

    def _build_indexing(self, layout: QVBoxLayout) -> None:
        row = QHBoxLayout()
        self.statusLabel = QLabel()
        self.statusLabel.setObjectName("statusLabel")
        self.statusLabel.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.indexButton = QPushButton(tr("Index layers…"))
        self.indexButton.setObjectName("indexButton")
        self.indexButton.setToolTip(tr("Cut raster layers into tiles and embed them, so they can be searched"))
        self.indexButton.clicked.connect(self.choose_layers)
        row.addWidget(self.statusLabel, 1)
        row.addWidget(self.indexButton)
        layout.addLayout(row)
        progress_row = QHBoxLayout()
        self.indexProgress = QProgressBar()
        self.indexProgress.setObjectName("indexProgress")
        self.indexProgress.setRange(0, 100)
        self.indexProgress.setTextVisible(True)
        self.cancelButton = QPushButton(tr("Cancel"))
        self.cancelButton.setObjectName("cancelButton")
        self.cancelButton.clicked.connect(self.controller.cancel_indexing)
        progress_row.addWidget(self.indexProgress, 1)
        progress_row.addWidget(self.cancelButton)
        layout.addLayout(progress_row)
        footer = QHBoxLayout()
        self.providerLabel = QLabel()
        self.providerLabel.setObjectName("providerLabel")
        self.providerLabel.setStyleSheet("color: palette(mid);")
        self.providerLabel.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.providerLabel.setWordWrap(True)
        settings = QToolButton()
        settings.setObjectName("settingsButton")
        settings.setText(tr("Settings…"))
        settings.setAutoRaise(True)
        settings.clicked.connect(self.settingsRequested)
        footer.addWidget(self.providerLabel, 1)
        footer.addWidget(settings)
        layout.addLayout(footer)

    # -- actions ---------------------------------------------------------------------------------
    def _extent_only(self) -> bool:
        return self.scopeCombo.currentIndex() == SCOPE_EXTENT

    def _remember_limits(self) -> None:
        settings = self.controller.settings
        settings.top_k, settings.min_score = self.topKSpin.value(), self.minScoreSpin.value()
        settings.save()

    def _search(self) -> None:
        self._remember_limits()
        self.controller.search_text(self.queryEdit.text(), self._extent_only())

    def choose_layers(self) -> None:
        """Open the layer chooser (one, several or all raster layers); OK starts indexing."""
        if self.chooser is None:
            self.chooser = LayerChooser(self)
            self.chooser.accepted.connect(lambda: self.controller.index_layers(self.chooser.checked_layers()))
        self.chooser.populate(self.controller.layer_states())
        self.chooser.open()

    def export_results(self, path: str | None = None) -> None:
        if self.controller.results_layer() is None:
            self.controller.message("There are no results to export; run a search first.", Qgis.MessageLevel.Info)
            return
        if path is None:
            folder = QgsProject.instance().homePath()  # the project's folder (empty for an unsaved project)
            start = str(Path(folder) / "search_results.gpkg") if folder else "search_results.gpkg"
            path, _ = QFileDialog.getSaveFileName(self, tr("Export results"), start, tr("GeoPackage (*.gpkg)"))
            if not path:
                return
        written = self.controller.export(path, add_to_project=False)
        if written is not None:
            self._offer_to_add(str(written))

    def _offer_to_add(self, path: str) -> None:
        bar = self.controller.iface.messageBar()
        item = bar.createMessage(PLUGIN_NAME, f"Results written to {path}.")
        button = QPushButton(tr("Add to map"))
        button.setObjectName("addExportButton")

        def add() -> None:
            layer = QgsVectorLayer(f"{path}|layername={EXPORT_LAYER_NAME}", Path(path).stem, "ogr")
            QgsProject.instance().addMapLayer(layer)
            bar.popWidget(item)

        button.clicked.connect(add)
        item.layout().addWidget(button)
        messages.push(bar, PLUGIN_NAME, "", Qgis.MessageLevel.Success, 10, item)

    def _clear_marks(self) -> None:
        for tile_id in list(self.controller.marks):
            self.controller.mark(tile_id, 0)

    # -- rendering -------------------------------------------------------------------------------
    def _render_results(self) -> None:
        controller = self.controller
        self.resultsView.render_results()
        request = controller.request
        if request is None:
            self.summaryLabel.setText(tr("Type a description and press Enter. Results appear here and on the map."))
        else:
            self.summaryLabel.setText(f"<b>{len(controller.results)}</b> tiles for <i>{request.label}</i>"
                                      + (" in the map extent" if request.bbox else ""))
        self.exportButton.setEnabled(bool(controller.results))
        self._render_marks()

    def _render_marks(self) -> None:
        self.resultsView.render_marks()
        marks = self.controller.marks
        good = sum(1 for v in marks.values() if v > 0)
        bad = len(marks) - good
        self.marksLabel.setText(f"{good} good, {bad} bad example{'s' if bad != 1 else ''}")
        self.refineBar.setVisible(bool(marks))

    def _render_searching(self, busy: bool) -> None:
        self.searchButton.setEnabled(not busy and not self.controller.missing)
        self.searchButton.setText(tr("Searching…") if busy else tr("Search"))

    def _render_indexing(self) -> None:
        task = self.controller.index_task
        running = task is not None
        self.indexProgress.setVisible(running)
        self.cancelButton.setVisible(running)
        self.indexButton.setEnabled(not running and not self.controller.missing)
        if running:
            try:
                self.indexProgress.setValue(int(task.progress()))
                # The layer name can be long: the bar shows what fits, its tooltip all of it.
                room = max(40, self.indexProgress.width() - 16)
                text = self.indexProgress.fontMetrics().elidedText(f"{task.status_text} (%p%)",
                                                                     Qt.TextElideMode.ElideMiddle, room)
                self.indexProgress.setFormat(text)
                self.indexProgress.setToolTip(task.status_text)
            except RuntimeError:  # the task object was deleted meanwhile
                pass

    def _render_layers(self) -> None:
        states = self.controller.layer_states()
        indexed = sum(1 for _, state in states if state in (LayerState.INDEXED, LayerState.OTHER_GRID))
        other_grid = sum(1 for _, state in states if state == LayerState.OTHER_GRID)
        if not states:
            text = tr("No raster layer in the project")
        else:
            text = f"{indexed} of {len(states)} raster layer{'s' if len(states) != 1 else ''} indexed" \
                + (f" ({other_grid} with another tile size)" if other_grid else "")
        self.statusLabel.setText(text)
        self.statusLabel.setToolTip("\n".join(f"{layer.name()}: {state}" for layer, state in states))
        searchable = indexed > 0 and not self.controller.missing
        self.searchButton.setToolTip("" if searchable else tr("Install the missing packages first")
                                     if self.controller.missing else tr("Index a raster layer first"))

    def _render_model(self) -> None:
        model = self.controller.engine.loaded_model
        if model is not None:
            self.providerLabel.setText(f"{model.name} · runs on {model.provider.upper()}")
            self.providerLabel.setToolTip(f"Model {model.name} from {model.directory}, run by ONNX Runtime on "
                                          f"{model.provider.upper()} (the provider that actually ran)")
            return
        info = self.controller.model_info(quiet=True)
        if info is None:
            self.providerLabel.setText(tr("No model found: choose one in Settings"))
        else:
            self.providerLabel.setText(f"{info.name} · loads on first use")
            self.providerLabel.setToolTip(str(info.directory))
