"""The plugin on a stock QGIS: QGIS's own Python without onnxruntime, faiss or threadpoolctl (issue 13, item 1).

The other tests run in the virtual environment, where every package is present and a missing one
can only be faked. Here ``stock_qgis_check.py`` runs under ``/usr/bin/python3 -I``: no venv, no
``PYTHONPATH``, no user site-packages, so the optional packages truly cannot be imported, and the
plugin is loaded by ``classFactory`` + ``initGui`` in a real ``QgsApplication``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis

SYSTEM_PYTHON = Path("/usr/bin/python3")
CHECK = Path(__file__).with_name("stock_qgis_check.py")
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
