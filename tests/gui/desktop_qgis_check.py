"""Run by ``test_stock_qgis.py`` inside the real QGIS desktop (``qgis --code <this>``): what the analyst sees.

QGIS has started with the plugin enabled; two seconds later this writes the report to the file
named by ``$RS_DESKTOP_REPORT`` (the plugin loaded or not, message bar, toolbar, menu, Processing
provider) and quits QGIS.
"""

import json
import os

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QToolBar
from qgis.utils import iface, plugins


def report() -> None:
    window = iface.mainWindow()
    toolbar = window.findChild(QToolBar, "RsTextSearchToolbar")
    menus = [action.menu() for action in iface.rasterMenu().actions() if action.menu() is not None]
    out = {
        "loaded": "rs_text_search" in plugins,
        "bar": [item.text() for item in iface.messageBar().items()],
        "toolbar": [action.text() for action in toolbar.actions()] if toolbar is not None else None,
        "menu": [a.text() for menu in menus if menu.title() == "&RS Text Search" for a in menu.actions()],
        "provider": QgsApplication.processingRegistry().providerById("rs_text_search") is not None,
    }
    with open(os.environ["RS_DESKTOP_REPORT"], "w", encoding="utf-8") as handle:
        json.dump(out, handle)
    QgsApplication.instance().exit(0)


QTimer.singleShot(2000, report)
