"""The plugin's settings: a typed dataclass read from and written to ``QgsSettings``.

Keys live under the ``rs_text_search/`` group. An absent key, not a falsy value, selects the
field's default; values are coerced to the field's type (``bool`` is checked before ``int``,
since QSettings hands back ``"true"`` strings on some platforms).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from qgis.core import QgsSettings

__all__ = ["GROUP", "PROVIDERS", "PluginSettings"]

GROUP = "rs_text_search"
PROVIDERS = ("auto", "cuda", "cpu")  # what core.model.load_model accepts
NO_MIN_SCORE = -1.0  # cosine similarities never go below -1, so -1 means "no minimum"


@dataclass
class PluginSettings:
    """What the analyst chose in the settings dialog and the dock.

    model_dir: model folder; empty selects the bundled default model.
    provider: ONNX Runtime execution provider: ``auto`` (CUDA when it works), ``cuda`` or ``cpu``.
    tile_size_px: tile side in raster pixels; 0: automatic (``core.indexing.auto_tile_size``).
    overlap: fraction of a tile shared with its neighbour, 0 <= overlap < 1.
    top_k: number of results a search returns.
    min_score: lowest cosine similarity shown; ``NO_MIN_SCORE`` shows every result.
    """

    model_dir: str = ""
    provider: str = "auto"
    tile_size_px: int = 0
    overlap: float = 0.0
    top_k: int = 20
    min_score: float = NO_MIN_SCORE

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            self.provider = "auto"
        self.tile_size_px = max(0, int(self.tile_size_px))
        if 0 < self.tile_size_px < 8:  # the smallest tile the grid accepts
            self.tile_size_px = 8
        self.overlap = min(max(float(self.overlap), 0.0), 0.9)
        self.top_k = min(max(int(self.top_k), 1), 1000)
        self.min_score = min(max(float(self.min_score), NO_MIN_SCORE), 1.0)

    @property
    def min_score_or_none(self) -> float | None:
        return None if self.min_score <= NO_MIN_SCORE else self.min_score

    @classmethod
    def load(cls, settings: QgsSettings | None = None) -> PluginSettings:
        """Read every field; absent keys keep the default, unreadable values too."""
        settings = settings or QgsSettings()
        values = {}
        defaults = cls()
        for field in fields(cls):
            key = f"{GROUP}/{field.name}"
            if not settings.contains(key):
                continue
            raw = settings.value(key)
            try:
                values[field.name] = _coerce(raw, type(getattr(defaults, field.name)))
            except (TypeError, ValueError):
                continue
        return cls(**values)

    def save(self, settings: QgsSettings | None = None) -> None:
        settings = settings or QgsSettings()
        for field in fields(self):
            settings.setValue(f"{GROUP}/{field.name}", getattr(self, field.name))


def _coerce(raw: object, kind: type) -> object:
    if kind is bool:  # before int: bool is a subclass of int
        if isinstance(raw, str):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return bool(raw)
    if kind is int:
        if isinstance(raw, bool):
            raise TypeError("a boolean is not a number")
        return int(float(raw))
    if kind is float:
        if isinstance(raw, bool):
            raise TypeError("a boolean is not a number")
        return float(raw)
    return "" if raw is None else str(raw)
