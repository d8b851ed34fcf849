"""The plugin in a stock QGIS Python: ``test_stock_qgis.py`` runs ``/usr/bin/python3 -I <this> OUT.json [DIR]``.

``-I`` drops the virtual environment, ``PYTHONPATH`` and the user's site-packages, so ``sys.path`` is
what QGIS's own Python has (Debian's dist-packages), plus this checkout. The script loads the plugin
through ``classFactory`` + ``initGui`` in a real offscreen ``QgsApplication`` and writes what an
analyst would see as JSON: which optional modules exist, the message bar, the menu entries, the
dock's buttons, what a Processing algorithm says, then unloads. It needs no pytest.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OPTIONAL = ("onnxruntime", "faiss", "threadpoolctl")


def main(out: Path, extra_path: str | None = None) -> int:
    sys.path.insert(0, str(REPO))
    if extra_path:  # e.g. a folder holding just one of the optional packages
        sys.path.append(extra_path)
    profile = Path(tempfile.mkdtemp(prefix="stock_qgis_profile_"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(profile)
    os.environ["RS_TEXT_SEARCH_CACHE"] = str(profile / "cache")
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback
    from qgis.PyQt.QtCore import QSettings
    from qgis.PyQt.QtWidgets import QLabel, QPushButton

    QSettings.setDefaultFormat(QSettings.IniFormat)
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(profile))
    app = QgsApplication([b"stock_qgis_check"], True)
    app.initQgis()
    sys.path.append(str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins"))
    from processing.core.Processing import Processing

    Processing.initialize()
    from tests.gui.qgis_fakes import FakeIface, flush_deletes

    report: dict = {"sys_path": sys.path,
                    "optional_found": [m for m in OPTIONAL if importlib.util.find_spec(m) is not None]}
    import rs_text_search

    iface = FakeIface()
    plugin = rs_text_search.classFactory(iface)
    plugin.initGui()
    report["missing"] = plugin.missing
    report["bar"] = [item.text() for item in iface.messageBar().items()]
    report["menu"] = [action.text() for top in iface.raster_menu.actions() if top.menu() is not None
                      for action in top.menu().actions()]
    dock = plugin.dock
    report["banner"] = dock.findChild(QLabel, "dependencyText").text() if dock.dependencyBanner.isVisibleTo(
        dock) else None
    report["search_enabled"] = dock.searchButton.isEnabled()
    report["index_enabled"] = dock.indexButton.isEnabled()
    report["install_buttons"] = sorted(b.objectName() for b in iface.window.findChildren(QPushButton)
                                       if b.objectName() in ("rsInstallFromBar", "installButton"))
    plugin.show_install()
    report["install_command"] = plugin.dialogs[-1].commandView.toPlainText()
    from rs_text_search.gui import deps

    report["numpy"] = deps.numpy_version()
    report["interpreter_problem"] = deps.interpreter_problem()

    messages = []

    class Feedback(QgsProcessingFeedback):
        def reportError(self, error, fatalError=False):  # noqa: N802, N803 - QGIS API
            messages.append(error)

    algorithms = {}
    for algorithm_id in ("rs_text_search:search_by_text", "rs_text_search:index_raster_layers"):
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
        parameters = {"QUERY": "houses", "LAYERS": [], "OUTPUT": "memory:"}
        messages.clear()
        _, ok = algorithm.run(parameters, QgsProcessingContext(), Feedback())
        algorithms[algorithm_id] = {"ok": ok, "messages": list(messages)}
    report["algorithms"] = algorithms
    report["optional_imported"] = sorted({m.split(".")[0] for m in sys.modules} & set(OPTIONAL))
    plugin.unload()
    flush_deletes()
    report["unloaded"] = plugin.controller is None and plugin.provider is None
    iface.close()
    flush_deletes()
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    app.exitQgis()
    shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), *sys.argv[2:3]))
