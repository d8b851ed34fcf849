"""The "Index layers" dialog: tick one, several or all raster layers of the project.

Each row says whether the layer is already indexed with the current model and tile size, indexed
with another tile size, partly indexed (a cancelled run that will resume) or unreadable; layers
that still need work are ticked at first.
"""

from __future__ import annotations

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .controller import LayerState
from .meta import tr

__all__ = ["LayerChooser"]

LAYER_ROLE = Qt.ItemDataRole.UserRole + 1


class LayerChooser(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("RsTextSearchLayerChooser")
        self.setWindowTitle(tr("Index raster layers"))
        layout = QVBoxLayout(self)
        hint = QLabel(tr("Indexing cuts each layer into tiles and embeds them once; searches are then instant. "
                         "Online layers (XYZ, WMS) are indexed over the current map extent at the current scale."))
        hint.setWordWrap(True)
        layout.addWidget(hint)
        self.layerList = QListWidget()
        self.layerList.setObjectName("layerList")
        layout.addWidget(self.layerList, 1)
        row = QHBoxLayout()
        for text, checked in ((tr("Select all"), True), (tr("Select none"), False)):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, checked=checked: self.set_all(checked))
            row.addWidget(button)
        row.addStretch(1)
        layout.addLayout(row)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText(tr("Index"))
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.resize(420, 320)

    def populate(self, states: list[tuple[QgsRasterLayer, str]]) -> None:
        self.layerList.clear()
        for layer, state in states:
            item = QListWidgetItem(f"{layer.name()}  —  {state}")
            item.setData(LAYER_ROLE, layer.id())
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            wanted = state in (LayerState.NOT_INDEXED, LayerState.PARTIAL, LayerState.OTHER_GRID)
            item.setCheckState(Qt.CheckState.Checked if wanted else Qt.CheckState.Unchecked)
            if state == LayerState.UNREADABLE:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
            self.layerList.addItem(item)

    def set_all(self, checked: bool) -> None:
        for i in range(self.layerList.count()):
            item = self.layerList.item(i)
            if item.flags() & Qt.ItemFlag.ItemIsEnabled:
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def set_checked(self, layer_ids: list[str]) -> None:
        for i in range(self.layerList.count()):
            item = self.layerList.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.data(LAYER_ROLE) in layer_ids else Qt.CheckState.Unchecked)

    def checked_layers(self) -> list[QgsRasterLayer]:
        """The ticked layers still in the project (looked up by id: the project may have changed)."""
        project = QgsProject.instance()
        chosen = []
        for i in range(self.layerList.count()):
            item = self.layerList.item(i)
            layer = project.mapLayer(item.data(LAYER_ROLE)) if item.checkState() == Qt.CheckState.Checked else None
            if layer is not None:
                chosen.append(layer)
        return chosen
