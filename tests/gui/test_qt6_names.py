"""The plugin's Qt and QGIS names are the ones Qt6 builds of QGIS (QGIS 4) keep (issue 13, item 6).

PyQt6 drops unscoped enum members (``QgsTask.CanCancel`` must be ``QgsTask.Flag.CanCancel``) and
``QVariant.Int``-style types, and moves ``QAction`` to QtGui. Every ``Class.Member`` in the plugin
whose member is an enum value of a class imported from ``qgis`` or ``qgis.PyQt`` is found here by
asking PyQt5 itself what the name is, so the check covers names nobody listed. This is a static
check on Qt5: it does not prove the plugin runs on Qt6, so metadata.txt does not claim it yet.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis

PLUGIN = Path(__file__).resolve().parents[2] / "rs_text_search" / "gui"


def _imported_names(tree: ast.Module) -> dict[str, object]:
    """Local name -> object for ``from qgis... import X`` and ``from qgis.PyQt... import X``."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "qgis":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    names[alias.asname or alias.name] = getattr(module, alias.name)
    return names


def _unscoped(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = _imported_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names:
            value = getattr(names[node.value.id], node.attr, None)
            if type(type(value)).__name__ == "enumtype":  # a sip enum member reached without its enum's name
                found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr} -> "
                             f"{type(value).__qualname__}.{node.attr}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("Flag") and node.attr[4:5].isupper() \
                and isinstance(node.value, ast.Name) and node.value.id not in names:
            found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr} (an enum member through an "
                         "instance)")
    return found


def test_no_unscoped_enums_or_qvariant_types_in_the_plugin(qgis_app):
    found = [hit for path in sorted(PLUGIN.rglob("*.py")) for hit in _unscoped(path)]
    assert not found, "Qt6 needs scoped enum names:\n" + "\n".join(found)


def test_qaction_is_imported_where_qt6_has_it(qgis_app):
    for path in sorted(PLUGIN.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "qgis.PyQt.QtWidgets" and \
                    any(alias.name == "QAction" for alias in node.names):
                assert _in_fallback(tree, node), f"{path.name}:{node.lineno} imports QAction from QtWidgets " \
                                                 "(QtGui on Qt6) without trying QtGui first"


def _in_fallback(tree: ast.Module, target: ast.ImportFrom) -> bool:
    """True when ``target`` is the ``except ImportError`` branch of a try that imports from QtGui first."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(target in ast.walk(handler) for handler in node.handlers):
            return any(isinstance(n, ast.ImportFrom) and n.module == "qgis.PyQt.QtGui" for n in node.body)
    return False
