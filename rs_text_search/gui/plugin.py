"""The plugin object QGIS creates through ``classFactory``: ``initGui`` and ``unload`` are mirrors.

``initGui`` checks dependencies first, then adds (in this order) the translator, the log handler,
the controller, the dock, the actions with their menu entries and the plugin's own toolbar, the
map tool and the canvas menu entry, and the Processing provider through ``initProcessing``
(which ``qgis_process`` calls alone). ``unload`` removes the same objects in reverse order: docks
with ``removeDockWidget`` + ``deleteLater``, menu entries under the identical title, the toolbar,
the map tool, the provider and every signal connection, so loading and unloading leaves nothing
behind.
"""

from __future__ import annotations

import contextlib
import logging

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices, QIcon
from qgis.PyQt.QtWidgets import QPushButton

from . import deps, messages
from . import log as plugin_log
from .controller import Controller
from .deps_dialog import InstallDialog
from .dock import SearchDock
from .maptool import CanvasMenuHook, SimilarTileTool
from .meta import PLUGIN_NAME, help_url, icon_path, install_translator, remove_translator, similar_icon_path, tr
from .options import OptionsDialog
from .processing.provider import RsTextSearchProvider

try:
    from qgis.PyQt.QtGui import QAction  # Qt6 (QGIS 4)
except ImportError:
    from qgis.PyQt.QtWidgets import QAction  # Qt5

__all__ = ["RsTextSearchPlugin", "MENU_TITLE", "TOOLBAR_OBJECT_NAME"]

log = logging.getLogger(__name__)

MENU_TITLE = "&RS Text Search"
TOOLBAR_OBJECT_NAME = "RsTextSearchToolbar"


class RsTextSearchPlugin:
    """Created by ``classFactory(iface)``; holds nothing until ``initGui``."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.missing: list[str] = []
        self.controller: Controller | None = None
        self.dock: SearchDock | None = None
        self.actions: list[QAction] = []
        self.toolbar_actions: list[QAction] = []
        self.toolbar = None
        self.map_tool: SimilarTileTool | None = None
        self.menu_hook: CanvasMenuHook | None = None
        self.provider: RsTextSearchProvider | None = None
        self.dialogs: list = []
        self._missing_message = None
        self._log_handler = None
        self._translator = None

    # -- load ------------------------------------------------------------------------------------
    def initGui(self) -> None:  # noqa: N802 - QGIS API
        deps.activate()
        self.missing = deps.missing_modules()
        self._translator = install_translator()
        self._log_handler = plugin_log.install()
        icon = QIcon(icon_path())
        window, canvas = self.iface.mainWindow(), self.iface.mapCanvas()

        self.controller = Controller(self.iface, self.missing)
        self.dock = SearchDock(self.controller, window)
        self.dock.installRequested.connect(self.show_install)
        self.dock.settingsRequested.connect(self.show_settings)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)

        panel = self.dock.toggleViewAction()
        panel.setIcon(icon)
        panel.setText(tr("RS Text Search panel"))
        similar = QAction(QIcon(similar_icon_path()), tr("Find similar tiles (click the map)"), window)
        similar.setObjectName("rsFindSimilarTool")
        similar.setCheckable(True)
        similar.setToolTip(tr("Click a tile on the map to find tiles that look like it"))
        index = QAction(QgsApplication.getThemeIcon("/mActionAddRasterLayer.svg"), tr("Index raster layers…"), window)
        index.setObjectName("rsIndexLayers")
        index.triggered.connect(self._index)
        settings = QAction(QgsApplication.getThemeIcon("/mActionOptions.svg"), tr("Settings…"), window)
        settings.triggered.connect(self.show_settings)
        help_action = QAction(QgsApplication.getThemeIcon("/mActionHelpContents.svg"), tr("Help"), window)
        help_action.setObjectName("rsHelp")
        help_action.triggered.connect(self.show_help)
        self.actions = [panel, index, similar, settings]
        if self.missing:
            install = QAction(tr("Install missing dependencies…"), window)
            install.triggered.connect(self.show_install)
            self.actions.append(install)
        self.actions.append(help_action)
        for action in self.actions:
            self.iface.addPluginToRasterMenu(MENU_TITLE, action)
        # A toolbar of its own: the Raster toolbar is hidden in a fresh profile.
        self.toolbar = self.iface.addToolBar(PLUGIN_NAME)
        self.toolbar.setObjectName(TOOLBAR_OBJECT_NAME)
        self.toolbar.setToolTip(PLUGIN_NAME)
        self.toolbar_actions = [panel, index, similar]
        for action in self.toolbar_actions:
            self.toolbar.addAction(action)

        self.map_tool = SimilarTileTool(canvas, self.controller.find_similar_at)
        self.map_tool.setAction(similar)
        similar.triggered.connect(self._toggle_tool)
        self.menu_hook = CanvasMenuHook(canvas, self.controller.find_similar_at)

        self.initProcessing()
        if self.missing:
            self._warn_missing()

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API: qgis_process calls only this one
        """Register the Processing provider (once; ``initGui`` calls it too, sharing the dock's engine)."""
        if self.provider is not None:
            return
        deps.activate()
        engine = self.controller.engine if self.controller is not None else None
        self.provider = RsTextSearchProvider(engine, QIcon(icon_path()))
        QgsApplication.processingRegistry().addProvider(self.provider)

    # -- unload: initGui backwards -----------------------------------------------------------------
    def unload(self) -> None:
        if self._missing_message is not None:
            with contextlib.suppress(RuntimeError):  # the analyst may have closed it already
                self.iface.messageBar().popWidget(self._missing_message)
            self._missing_message = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)  # deletes it
            self.provider = None
        canvas = self.iface.mapCanvas()
        if self.menu_hook is not None:
            self.menu_hook.disconnect()
            self.menu_hook = None
        if self.map_tool is not None:
            if canvas.mapTool() is self.map_tool:
                canvas.unsetMapTool(self.map_tool)
            self.map_tool.deleteLater()
            self.map_tool = None
        self.toolbar_actions = []
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU_TITLE, action)
        for action in self.actions[1:]:  # the first is the dock's own toggle action, deleted with it
            action.deleteLater()
        self.actions = []
        for dialog in self.dialogs:
            dialog.close()
            dialog.deleteLater()
        self.dialogs = []
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.disconnect_controller()
            self.dock.deleteLater()
            self.dock = None
        if self.controller is not None:
            self.controller.shutdown()
            self.controller.deleteLater()
            self.controller = None
        plugin_log.uninstall(self._log_handler)
        self._log_handler = None
        remove_translator(self._translator)
        self._translator = None

    # -- actions ---------------------------------------------------------------------------------
    def _index(self) -> None:
        self.dock.show()
        self.dock.raise_()
        self.dock.choose_layers()

    def _toggle_tool(self, checked: bool) -> None:
        canvas = self.iface.mapCanvas()
        if checked:
            canvas.setMapTool(self.map_tool)
        elif canvas.mapTool() is self.map_tool:
            canvas.unsetMapTool(self.map_tool)

    def show_help(self) -> None:
        QDesktopServices.openUrl(QUrl(help_url()))

    def show_settings(self) -> None:
        dialog = OptionsDialog(self.controller.settings, self.iface.mainWindow())
        dialog.accepted.connect(lambda: self.controller.set_settings(dialog.settings()))
        dialog.finished.connect(lambda _result: self._forget(dialog))
        self.dialogs.append(dialog)
        dialog.open()

    def show_install(self) -> None:
        dialog = InstallDialog(self.missing, self.iface.mainWindow())
        dialog.finished.connect(lambda _result: self._forget(dialog))
        self.dialogs.append(dialog)
        dialog.open()

    def _forget(self, dialog) -> None:
        if dialog in self.dialogs:
            self.dialogs.remove(dialog)
            dialog.deleteLater()

    def _warn_missing(self) -> None:
        bar = self.iface.messageBar()
        them = "it is" if len(self.missing) == 1 else "they are"
        item = bar.createMessage(PLUGIN_NAME, f"{deps.missing_sentence(self.missing)}; the plugin cannot index or "
                                 f"search until {them} installed.")
        button = QPushButton("Install…")
        button.setObjectName("rsInstallFromBar")
        button.clicked.connect(self.show_install)
        item.layout().addWidget(button)
        messages.push(bar, PLUGIN_NAME, "", Qgis.MessageLevel.Warning, 0, item)
        self._missing_message = item
        log.warning("missing dependencies: %s", ", ".join(self.missing))
