"""The engine imports no Qt, no QGIS and no torch (ARCHITECTURE.md), checked in a clean interpreter."""

import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "rs_text_search" / "core"
FORBIDDEN = ("qgis", "PyQt5", "PyQt6", "PySide6", "torch", "open_clip", "transformers")


def test_core_modules_import_nothing_forbidden():
    modules = [f"rs_text_search.core.{p.stem}" for p in sorted(CORE.glob("*.py")) if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=CORE.parents[1])
    assert out.stdout.strip() == "", f"core pulled in {out.stdout.strip()}"
    assert len(modules) >= 8


def test_core_source_has_no_forbidden_import_lines():
    for path in CORE.glob("*.py"):
        for line in path.read_text().splitlines():
            words = line.strip().split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] not in FORBIDDEN, f"{path.name}: {line.strip()}"
