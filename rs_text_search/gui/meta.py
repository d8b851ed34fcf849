"""The plugin's metadata (``metadata.txt``, read once), icons, help address and translations.

Installed from the zip, metadata.txt and icon.svg sit in the plugin folder; in a source checkout
(``make deploy`` links the package), they sit at the repository root, one folder up. ``tr`` marks
user-visible text; ``scripts/update_translations.py`` collects every ``tr("...")`` literal into
``rs_text_search/i18n/*.ts`` and ``install_translator`` loads the compiled ``.qm`` for QGIS's locale.
"""

from __future__ import annotations

import configparser
from functools import lru_cache
from pathlib import Path

from qgis.core import QgsSettings
from qgis.PyQt.QtCore import QCoreApplication, QLocale, QTranslator

__all__ = ["metadata", "icon_path", "similar_icon_path", "help_url", "tr", "install_translator",
           "remove_translator", "PLUGIN_NAME", "TR_CONTEXT"]

PLUGIN_NAME = "RS Text Search"
TR_CONTEXT = "RsTextSearch"
I18N = Path(__file__).resolve().parents[1] / "i18n"
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


def similar_icon_path() -> str:
    """The "Find similar tiles" tool's own icon (QGIS's Identify icon would promise something else)."""
    return str(Path(__file__).resolve().parent / "icons" / "similar_tiles.svg")


def help_url() -> str:
    """The plugin's documentation: the README's plugin section at the homepage from metadata.txt."""
    homepage = metadata().get("homepage", "").rstrip("/")
    return f"{homepage}#the-qgis-plugin" if homepage else ""


def icon_path() -> str:
    """Path of the plugin icon named in metadata.txt ('' when missing: Qt then shows no icon)."""
    found = _find(metadata().get("icon", "icon.svg"))
    return str(found) if found else ""


def tr(text: str) -> str:
    """``text`` in the analyst's language when a translation is installed (one context for the plugin)."""
    return QCoreApplication.translate(TR_CONTEXT, text)


def install_translator(folder: Path | None = None) -> QTranslator | None:
    """Load ``rs_text_search_<language>.qm`` for QGIS's user locale; the installed translator or None."""
    locale = str(QgsSettings().value("locale/userLocale", "") or QLocale().name())
    translator = QTranslator()
    for name in (locale, locale[:2]):
        if name and translator.load(f"rs_text_search_{name}", str(folder or I18N)):
            QCoreApplication.installTranslator(translator)
            return translator
    return None


def remove_translator(translator: QTranslator | None) -> None:
    if translator is not None:
        QCoreApplication.removeTranslator(translator)
