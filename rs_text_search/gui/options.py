"""The settings dialog: model folder, execution provider, tile size and overlap.

Edits a copy of ``PluginSettings``; OK hands it to the controller, which stores it in
``QgsSettings`` and reloads the model on next use.
"""

from __future__ import annotations

from dataclasses import replace

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QWidget,
)

from .meta import tr
from .settings import PROVIDERS, PluginSettings

__all__ = ["OptionsDialog"]

class OptionsDialog(QDialog):
    def __init__(self, settings: PluginSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("RsTextSearchOptions")
        self.setWindowTitle(tr("RS Text Search settings"))
        self._settings = replace(settings)
        form = QFormLayout(self)
        self.modelWidget = QgsFileWidget()
        self.modelWidget.setObjectName("modelWidget")
        self.modelWidget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.modelWidget.setFilePath(settings.model_dir)
        self.modelWidget.lineEdit().setPlaceholderText(tr("bundled model"))
        form.addRow(tr("Model folder"), self.modelWidget)
        self.providerCombo = QComboBox()
        self.providerCombo.setObjectName("providerCombo")
        labels = {"auto": tr("Auto (CUDA when it works, else CPU)"), "cuda": tr("CUDA (GPU)"), "cpu": tr("CPU")}
        for provider in PROVIDERS:
            self.providerCombo.addItem(labels[provider], provider)
        self.providerCombo.setCurrentIndex(PROVIDERS.index(settings.provider))
        form.addRow(tr("Runs on"), self.providerCombo)
        self.tileSpin = QSpinBox()
        self.tileSpin.setObjectName("tileSpin")
        self.tileSpin.setRange(0, 8192)
        self.tileSpin.setSpecialValueText(tr("automatic"))
        self.tileSpin.setSuffix(" px")
        self.tileSpin.setValue(settings.tile_size_px)
        self.tileSpin.setToolTip(tr("Automatic: each tile covers the ground one of the model's training images "
                                    "covered (78 m for the bundled model: 78 px on 1 m imagery, 256 px on 0.3 m), "
                                    "measured from the layer's pixel size. A number: tiles of that many raster "
                                    "pixels."))
        form.addRow(tr("Tile size"), self.tileSpin)
        self.overlapSpin = QDoubleSpinBox()
        self.overlapSpin.setObjectName("overlapSpin")
        self.overlapSpin.setRange(0.0, 0.9)
        self.overlapSpin.setSingleStep(0.25)
        self.overlapSpin.setValue(settings.overlap)
        form.addRow(tr("Tile overlap (fraction)"), self.overlapSpin)
        note = QLabel(tr("A new tile size or overlap needs the layers indexed again; existing indexes are kept."))
        note.setWordWrap(True)
        form.addRow(note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def settings(self) -> PluginSettings:
        return replace(self._settings, model_dir=self.modelWidget.filePath().strip(),
                       provider=self.providerCombo.currentData(), tile_size_px=self.tileSpin.value(),
                       overlap=self.overlapSpin.value())
