"""Collect the plugin's ``tr("...")`` texts into its Qt translation files (``rs_text_search/i18n/*.ts``).

``python scripts/update_translations.py`` adds new texts (unfinished) to every
``rs_text_search_<language>.ts`` and drops texts the code no longer has, keeping existing
translations; ``--check`` only reports what is out of date (exit 1). pylupdate would not do: the
plugin's ``tr`` is a plain function with one context for every module (``meta.TR_CONTEXT``).
``lrelease`` compiles the files into the ``.qm`` files QGIS loads (``make package`` does it).
"""

from __future__ import annotations

import argparse
import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GUI = REPO / "rs_text_search" / "gui"
I18N = REPO / "rs_text_search" / "i18n"
CONTEXT = "RsTextSearch"


def source_texts(folder: Path = GUI) -> list[str]:
    """Every literal passed to ``tr(...)`` in the plugin, in order of first appearance."""
    texts: dict[str, None] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "tr" \
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                texts.setdefault(node.args[0].value)
    return list(texts)


def translations(ts: Path) -> dict[str, str]:
    root = ET.parse(ts).getroot()
    return {m.findtext("source"): m.findtext("translation") or "" for m in root.iter("message")}


def write(ts: Path, language: str, texts: list[str], known: dict[str, str]) -> None:
    root = ET.Element("TS", version="2.1", language=language)
    context = ET.SubElement(root, "context")
    ET.SubElement(context, "name").text = CONTEXT
    for text in texts:
        message = ET.SubElement(context, "message")
        ET.SubElement(message, "source").text = text
        translation = ET.SubElement(message, "translation")
        if known.get(text):
            translation.text = known[text]
        else:
            translation.set("type", "unfinished")
    ET.indent(root)
    ts.write_text('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE TS>\n'
                  + ET.tostring(root, encoding="unicode") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date files instead of updating them")
    args = parser.parse_args(argv)
    texts = source_texts()
    stale = []
    for ts in sorted(I18N.glob("rs_text_search_*.ts")):
        known = translations(ts)
        if list(known) != texts:
            stale.append(ts.name)
            if not args.check:
                write(ts, ts.stem.removeprefix("rs_text_search_"), texts, known)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run python scripts/update_translations.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
