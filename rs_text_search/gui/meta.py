"""The plugin's metadata (``metadata.txt``, read once) and icon, wherever the plugin runs from.

Installed from the zip, both sit in the plugin folder; in a source checkout (``make deploy``
links the package), they sit at the repository root, one folder up.
"""

from __future__ import annotations

import configparser
from functools import lru_cache
from pathlib import Path

__all__ = ["metadata", "icon_path", "PLUGIN_NAME"]

PLUGIN_NAME = "RS Text Search"
_PACKAGE = Path(__file__).resolve().parents[1]


def _find(name: str) -> Path | None:
    for folder in (_PACKAGE, _PACKAGE.parent):
        if (folder / name).is_file():
            return folder / name
    return None


@lru_cache(maxsize=1)
def metadata() -> dict[str, str]:
    """The ``[general]`` section of metadata.txt (empty when it cannot be found)."""
    path = _find("metadata.txt")
    if path is None:
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    return dict(parser["general"]) if parser.has_section("general") else {}


def icon_path() -> str:
    """Path of the plugin icon named in metadata.txt ('' when missing: Qt then shows no icon)."""
    found = _find(metadata().get("icon", "icon.svg"))
    return str(found) if found else ""
