"""The Processing provider "RS Text Search" (id ``rs_text_search``), registered by ``initGui``."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..engine import Engine
from .algorithms import ALGORITHMS

__all__ = ["RsTextSearchProvider", "PROVIDER_ID"]

PROVIDER_ID = "rs_text_search"


class RsTextSearchProvider(QgsProcessingProvider):
    def __init__(self, engine: Engine | None = None, icon: QIcon | None = None) -> None:
        super().__init__()
        self.engine = engine or Engine()
        self._icon = icon or QIcon()

    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return "RS Text Search"

    def longName(self) -> str:  # noqa: N802 - QGIS API
        return "Natural-language search over remote-sensing imagery"

    def icon(self) -> QIcon:
        return self._icon

    def loadAlgorithms(self) -> None:  # noqa: N802
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm(self.engine))
