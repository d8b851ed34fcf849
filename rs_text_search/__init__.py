"""rs_text_search: natural-language search over remote-sensing rasters.

As a QGIS plugin, QGIS calls ``classFactory``; it stays tiny and imports the GUI lazily, so the
headless engine (``rs_text_search.core``) and the command line never import Qt or QGIS.
"""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    from .gui.plugin import RsTextSearchPlugin

    return RsTextSearchPlugin(iface)
