"""The plugin on a stock QGIS: QGIS's own Python without onnxruntime, faiss or threadpoolctl (issue 13, item 1).

The other tests run in the virtual environment, where every package is present and a missing one
can only be faked. Here ``stock_qgis_check.py`` runs under ``/usr/bin/python3 -I``: no venv, no
``PYTHONPATH``, no user site-packages, so the optional packages truly cannot be imported, and the
plugin is loaded by ``classFactory`` + ``initGui`` in a real ``QgsApplication``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis

SYSTEM_PYTHON = Path("/usr/bin/python3")
CHECK = Path(__file__).with_name("stock_qgis_check.py")
DESKTOP_CHECK = Path(__file__).with_name("desktop_qgis_check.py")
REPO = Path(__file__).resolve().parents[2]
MISSING_SENTENCE = "{} missing from QGIS's Python"


def _run_check(tmp_path: Path, extra_path: Path | None = None) -> dict:
    if not SYSTEM_PYTHON.exists() or subprocess.run([str(SYSTEM_PYTHON), "-I", "-c", "import qgis.core"],
                                                    capture_output=True).returncode:
        pytest.skip("QGIS's own Python (/usr/bin/python3 with python3-qgis) is not installed")
    out = tmp_path / "report.json"
    command = [str(SYSTEM_PYTHON), "-I", str(CHECK), str(out)] + ([str(extra_path)] if extra_path else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(out.read_text(encoding="utf-8"))


def test_plugin_loads_in_a_qgis_python_without_the_optional_packages(tmp_path):
    report = _run_check(tmp_path)
    if report["optional_found"]:
        pytest.skip(f"this machine's QGIS Python has {report['optional_found']}: not a stock QGIS")
    assert not any(".venv" in entry or "site-packages" in entry for entry in report["sys_path"]), report["sys_path"]
    assert report["missing"] == ["onnxruntime", "faiss", "threadpoolctl"]
    sentence = MISSING_SENTENCE.format("onnxruntime, faiss and threadpoolctl are")
    assert any(sentence in text for text in report["bar"]), report["bar"]
    assert sentence in report["banner"]
    assert "Install missing dependencies…" in report["menu"]
    assert report["install_buttons"] == ["installButton", "rsInstallFromBar"]
    # QGIS's own interpreter, pinned versions that work with its numpy, nothing QGIS already has.
    assert report["install_command"].startswith(f"{SYSTEM_PYTHON}.") and "--no-deps" in report["install_command"]
    faiss = "faiss-cpu==1.8.0" if tuple(int(x) for x in report["numpy"].split(".")[:2]) < (1, 25) else "faiss-cpu=="
    assert faiss in report["install_command"] and "numpy" not in report["install_command"].split("--target")[1]
    assert report["interpreter_problem"] is None
    assert not report["search_enabled"] and not report["index_enabled"]
    for algorithm_id, outcome in report["algorithms"].items():
        assert not outcome["ok"], algorithm_id
        [message] = outcome["messages"]  # one sentence, no ModuleNotFoundError traceback
        assert message.startswith(sentence) and "Traceback" not in message and message.count(". ") == 0, message
    assert report["optional_imported"] == []
    assert report["unloaded"]


def test_two_missing_packages_are_named_with_are(tmp_path):
    import threadpoolctl  # a single pure-Python module: put only it beside the stock packages

    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(threadpoolctl.__file__, extra)
    report = _run_check(tmp_path, extra)
    if set(report["optional_found"]) != {"threadpoolctl"}:
        pytest.skip(f"this machine's QGIS Python has {report['optional_found']}: not a stock QGIS")
    assert report["missing"] == ["onnxruntime", "faiss"]
    assert any(MISSING_SENTENCE.format("onnxruntime and faiss are") in text for text in report["bar"]), report["bar"]


def test_desktop_qgis_starts_with_the_plugin_enabled(tmp_path):
    """The reviewer's path: QGIS 3.22 itself (under Xvfb) starting with the plugin enabled in a fresh profile."""
    if not Path("/usr/bin/qgis").is_file() or shutil.which("xvfb-run") is None:
        pytest.skip("QGIS desktop (Debian package 'qgis') or xvfb-run is not installed")
    profile = tmp_path / "profiles" / "default" / "QGIS"
    profile.mkdir(parents=True)
    (profile / "QGIS3.ini").write_text("[PythonPlugins]\nrs_text_search=true\n", encoding="utf-8")
    plugin = tmp_path / "plugins" / "rs_text_search"
    plugin.mkdir(parents=True)
    for entry in [*(REPO / "rs_text_search").iterdir(), REPO / "metadata.txt", REPO / "icon.svg"]:
        if entry.name != "__pycache__":
            (plugin / entry.name).symlink_to(entry)
    report = tmp_path / "report.json"
    env = {"HOME": str(tmp_path / "home"), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "QGIS_PLUGINPATH": str(plugin.parent), "RS_DESKTOP_REPORT": str(report),
           "RS_TEXT_SEARCH_CACHE": str(tmp_path / "cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    # coreutils' timeout stops xvfb-run gently, so it takes Xvfb and QGIS down with it.
    done = subprocess.run(["timeout", "150", "xvfb-run", "-a", "/usr/bin/qgis", "--profiles-path", str(tmp_path),
                           "--nologo", "--noversioncheck", "--code", str(DESKTOP_CHECK)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=200)
    assert report.is_file(), "QGIS did not finish starting (an error dialog such as 'Couldn't load plugin' blocks " \
        "it): " + done.stdout[-3000:] + done.stderr[-3000:]
    seen = json.loads(report.read_text(encoding="utf-8"))
    assert seen["loaded"] and seen["provider"], seen
    assert not any("Couldn't load plugin" in text for text in seen["bar"]), seen["bar"]
    assert seen["toolbar"] == ["RS Text Search panel", "Index raster layers…", "Find similar tiles (click the map)"]
    assert "Help" in seen["menu"], seen["menu"]
    if subprocess.run([str(SYSTEM_PYTHON), "-I", "-c", "import onnxruntime, faiss, threadpoolctl"],
                      capture_output=True).returncode != 0:  # a stock QGIS: it says what is missing
        assert any("missing from QGIS's Python" in text for text in seen["bar"]), seen["bar"]
        assert "Install missing dependencies…" in seen["menu"]
