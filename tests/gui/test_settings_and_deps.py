"""Settings round trips through QgsSettings; missing dependencies never stop the plugin loading."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from qgis.core import QgsSettings
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QAction, QPlainTextEdit

import rs_text_search
from rs_text_search.gui import deps
from rs_text_search.gui.settings import GROUP, NO_MIN_SCORE, PluginSettings

from .conftest import flush_deletes

pytestmark = pytest.mark.qgis


@pytest.fixture
def clean_settings(qgis_app):
    QgsSettings().remove(GROUP)
    yield QgsSettings()
    QgsSettings().remove(GROUP)


def test_absent_values_select_defaults_and_falsy_values_are_kept(clean_settings):
    assert PluginSettings.load() == PluginSettings()
    PluginSettings(model_dir="/models/x", provider="cpu", tile_size_px=0, overlap=0.25, top_k=5,
                   min_score=0.0).save()
    loaded = PluginSettings.load()
    assert loaded == PluginSettings("/models/x", "cpu", 0, 0.25, 5, 0.0)
    assert loaded.min_score_or_none == 0.0, "a stored 0 is a real minimum, not 'absent'"
    assert PluginSettings().min_score_or_none is None and PluginSettings().min_score == NO_MIN_SCORE


def test_unreadable_values_fall_back_to_defaults(clean_settings):
    clean_settings.setValue(f"{GROUP}/top_k", "many")
    clean_settings.setValue(f"{GROUP}/tile_size_px", True)  # a boolean is not a tile size
    clean_settings.setValue(f"{GROUP}/provider", "tpu")
    clean_settings.setValue(f"{GROUP}/overlap", "0.5")
    loaded = PluginSettings.load()
    assert (loaded.top_k, loaded.tile_size_px, loaded.provider, loaded.overlap) == (20, 0, "auto", 0.5)


def test_options_dialog_edits_a_copy(clean_settings, qtbot):
    from rs_text_search.gui.options import OptionsDialog

    original = PluginSettings(model_dir="/a", tile_size_px=128)
    dialog = OptionsDialog(original)
    qtbot.addWidget(dialog)
    dialog.modelWidget.setFilePath("/b")
    dialog.providerCombo.setCurrentIndex(2)
    dialog.tileSpin.setValue(0)
    dialog.overlapSpin.setValue(0.5)
    edited = dialog.settings()
    assert (edited.model_dir, edited.provider, edited.tile_size_px, edited.overlap) == ("/b", "cpu", 0, 0.5)
    assert original.model_dir == "/a"


def test_install_command_uses_qgis_python_pins_versions_and_installs_no_dependencies(qgis_app, tmp_path):
    folder = deps.dependency_dir(str(tmp_path / "profile"))
    plugin_folder = Path(rs_text_search.__file__).resolve().parent
    assert plugin_folder not in folder.parents
    assert folder.name == deps.python_tag() and f"{sys.version_info.major}{sys.version_info.minor}" in folder.name
    command = deps.install_command(["onnxruntime", "faiss"], folder)
    assert command[1:6] == ["-m", "pip", "install", "--only-binary=:all:", "--no-deps"]
    assert command[command.index("--target") + 1] == str(folder)
    assert [c for c in command if "==" in c] == deps.pinned_requirements(["onnxruntime", "faiss"])
    assert not [c for c in command if c.startswith("numpy")], "QGIS's numpy is never installed or replaced"
    # The interpreter QGIS embeds (here the one the virtual environment was made from), not PATH's.
    python = deps.python_executable()
    assert Path(python).name.startswith("python") and Path(python).parent == Path(sys.base_exec_prefix) / "bin"
    assert deps.interpreter_problem(python) is None
    shim = tmp_path / "python3"  # e.g. a pyenv shim on PATH, resolving to another Python
    shim.write_text("#!/bin/sh\necho 3 8 /root/.pyenv/versions/3.8.18\n")
    shim.chmod(0o755)
    assert "is not the Python QGIS runs" in deps.interpreter_problem(str(shim))
    assert deps.missing_modules() == []  # this environment has them


def test_pins_follow_qgis_numpy_and_python():
    debian_qgis = deps.pinned_requirements(["onnxruntime", "faiss", "threadpoolctl"], "1.24.2", (3, 11))
    assert debian_qgis == ["onnxruntime==1.32.0", "faiss-cpu==1.8.0", "threadpoolctl==3.8.0"]
    assert deps.pinned_requirements(["faiss"], "1.26.4", (3, 11)) == ["faiss-cpu==1.15.1"]
    assert deps.pinned_requirements(["faiss"], "2.1.0", (3, 12)) == ["faiss-cpu==1.15.1"]
    assert deps.pinned_requirements(["onnxruntime"], "1.22.0", (3, 9)) == ["onnxruntime==1.19.2"]


def test_installed_means_importable_in_a_fresh_interpreter(qgis_app, tmp_path):
    python = deps.python_executable()
    empty = tmp_path / "deps"
    empty.mkdir()
    assert "No module named 'faiss'" in deps.verify_import(["faiss"], empty, python), "QGIS's Python lacks faiss"
    (empty / "faiss").mkdir()
    (empty / "faiss" / "__init__.py").write_text("raise ImportError('a broken wheel')\n")
    assert "a broken wheel" in deps.verify_import(["faiss"], empty, python)
    (empty / "faiss" / "__init__.py").write_text("")
    assert deps.verify_import(["faiss"], empty, python) is None


def test_install_dialog_runs_qgis_pip_and_checks_by_importing(qgis_app, tmp_path, monkeypatch, qtbot):
    """The real pip of QGIS's Python installs a pinned wheel with --no-deps into the folder, offline."""
    import zipfile

    import threadpoolctl

    from rs_text_search.gui.deps_dialog import InstallDialog

    if deps.interpreter_problem() is not None:
        pytest.skip(deps.interpreter_problem())
    # A wheel of the pinned threadpoolctl, rebuilt from this environment's installed files (no network).
    installed = Path(threadpoolctl.__file__)
    info = installed.parent / f"threadpoolctl-{deps.THREADPOOLCTL}.dist-info"
    if not info.is_dir():
        pytest.skip(f"threadpoolctl {deps.THREADPOOLCTL} is not the installed version")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / f"threadpoolctl-{deps.THREADPOOLCTL}-py3-none-any.whl", "w") as wheel:
        wheel.write(installed, installed.name)
        for name in ("METADATA", "WHEEL", "RECORD"):
            wheel.write(info / name, f"{info.name}/{name}")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setattr(deps, "dependency_dir", lambda settings_dir=None: tmp_path / "profile" / "deps")

    dialog = InstallDialog(["threadpoolctl"])
    assert dialog.command[0] == deps.python_executable() and "threadpoolctl==3.8.0" in dialog.command
    dialog.install()
    qtbot.waitUntil(lambda: dialog.process is None, timeout=120_000)
    output = dialog.outputView.toPlainText()
    assert "Installed and checked by importing them" in output, output
    assert sorted(p.name for p in (tmp_path / "profile" / "deps").iterdir() if p.name != "__pycache__") == [
        "threadpoolctl-3.8.0.dist-info", "threadpoolctl.py"], "only the package itself, nothing QGIS has"
    dialog.close()
    dialog.deleteLater()


def test_missing_sentence_names_every_package_with_the_right_verb():
    assert deps.missing_sentence(["faiss"]) == "faiss is missing from QGIS's Python"
    assert deps.missing_sentence(["onnxruntime", "faiss"]) == "onnxruntime and faiss are missing from QGIS's Python"
    assert deps.missing_sentence(["onnxruntime", "faiss", "threadpoolctl"]).startswith(
        "onnxruntime, faiss and threadpoolctl are missing")


def test_plugin_loads_without_its_dependencies_and_says_what_is_missing(iface, plugin_settings, cache,
                                                                        monkeypatch, qtbot, allow_error_logs):
    monkeypatch.setattr(deps, "missing_modules", lambda: ["faiss"])
    plugin = rs_text_search.classFactory(iface)
    plugin.initGui()
    try:
        texts = [item.text() for item in iface.messageBar().items()]
        assert any("faiss is missing from QGIS's Python" in text for text in texts), texts
        assert plugin.dock.dependencyBanner.isVisibleTo(plugin.dock)
        assert not plugin.dock.indexButton.isEnabled()
        assert not plugin.dock.searchButton.isEnabled()
        plugin.controller.search_text("houses")
        assert plugin.controller.search_task is None
        install = next(a for a in plugin.actions if a.text() == "Install missing dependencies…")
        assert isinstance(install, QAction)
        install.trigger()
        [dialog] = plugin.dialogs
        command = dialog.findChild(QPlainTextEdit, "commandView").toPlainText()
        assert "--only-binary=:all:" in command and "--no-deps" in command and "faiss-cpu==" in command
        dialog.reject()
    finally:
        plugin.unload()
        flush_deletes()
    from qgis.PyQt.QtWidgets import QPushButton

    assert iface.messageBar().findChild(QPushButton, "rsInstallFromBar") is None, "its message goes with it"


def test_settings_from_the_dock_are_stored_and_used(plugin, iface, qtbot):
    from qgis.PyQt.QtWidgets import QToolButton

    qtbot.mouseClick(plugin.dock.findChild(QToolButton, "settingsButton"), Qt.LeftButton)
    [dialog] = plugin.dialogs
    assert dialog.isVisible() and dialog.tileSpin.value() == 64
    dialog.tileSpin.setValue(96)
    dialog.providerCombo.setCurrentIndex(0)
    dialog.accept()
    assert plugin.dialogs == []
    assert plugin.controller.settings.tile_size_px == 96 and plugin.controller.settings.provider == "auto"
    stored = PluginSettings.load()
    assert (stored.tile_size_px, stored.provider) == (96, "auto")
    assert "loads on first use" in plugin.dock.providerLabel.text()
