"""The engine as the plugin uses it: one loaded model, and which layers have an index. No widgets.

Shared by the dock's controller, the tasks and the Processing algorithms:

- ``plugin_model_dir`` finds the model: the folder chosen in the settings (or the one model folder
  inside it: where the model zip was unzipped), else the model bundled with the plugin or checkout;
- ``model_info`` reads a model's manifest only (cheap, GUI thread) to know its name and identity,
  so the dock can tell which layers are indexed before the ONNX sessions are loaded;
- ``model`` loads the ONNX sessions once per (folder, provider) and is safe to call from tasks;
- ``indexes_for`` finds a layer's finished index in the cache by the layer's identity (file
  indexes made on the command line included), preferring the current tile grid.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ModelError
from ..core.index import TileIndex, list_indexes
from ..core.indexing import tile_size_for_ground
from ..core.model import DEFAULT_MODEL_NAME, Model, load_model, model_sha256, read_manifest, resolve_model_dir
from ..core.tiling import GridSpec
from .settings import PluginSettings

__all__ = ["Engine", "ModelInfo", "plugin_model_dir", "MODEL_ZIP_HINT"]

log = logging.getLogger(__name__)


# The plugin zip ships without the model; `make model-zip` builds it as a separate download.
MODEL_ZIP_HINT = (f"No model is installed yet; unzip the model download (rs_text_search-model-{DEFAULT_MODEL_NAME}"
                  "-<version>.zip) into any folder and choose that folder in the RS Text Search settings.")


def plugin_model_dir(model_dir: str = "") -> Path:
    """The model folder for the settings' ``model_dir``; raises ModelError with one sentence."""
    if model_dir:
        folder = Path(model_dir).expanduser()
        if folder.is_dir() and not (folder / "manifest.json").is_file():
            inner = sorted(path.parent for path in folder.glob("*/manifest.json"))
            if len(inner) == 1:  # the folder the model zip was unzipped into
                return inner[0].resolve()
        return resolve_model_dir(folder)
    try:
        return resolve_model_dir(None)  # bundled: in the plugin folder when present, or the source checkout
    except ModelError:
        raise ModelError(MODEL_ZIP_HINT) from None


@dataclass(frozen=True)
class ModelInfo:
    """What the manifest says, without loading ONNX: enough to find indexes and build a grid."""

    directory: Path
    name: str
    sha256: str
    manifest: dict = field(compare=False, repr=False, default_factory=dict)

    def grid(self, settings: PluginSettings, ground_m: float | None = None) -> GridSpec:
        """The grid indexing would use for a raster with ``ground_m`` metre pixels (``source.layer_ground_m``)."""
        tile_size = settings.tile_size_px or tile_size_for_ground(self.manifest, ground_m, "").px
        return GridSpec(tile_size, settings.overlap)


class Engine:
    """A model cache and index finder; thread-safe where tasks need it to be."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: Model | None = None
        self._model_key: tuple[str, str] | None = None
        self._info_cache: dict[tuple[str, float], ModelInfo] = {}
        self._open_indexes: dict[str, TileIndex] = {}

    # -- the model ---------------------------------------------------------------------------
    def model_info(self, settings: PluginSettings) -> ModelInfo:
        """Manifest-level identity of the configured model; raises ModelError with one sentence."""
        directory = plugin_model_dir(settings.model_dir)
        stamp = (directory / "manifest.json").stat().st_mtime if (directory / "manifest.json").exists() else 0.0
        key = (str(directory), stamp)
        if key not in self._info_cache:
            manifest = read_manifest(directory, verify_files=False)
            self._info_cache[key] = ModelInfo(directory, str(manifest["name"]), model_sha256(manifest), manifest)
        return self._info_cache[key]

    def model(self, settings: PluginSettings) -> Model:
        """The loaded model for the settings (loaded on first use; any thread)."""
        directory = str(plugin_model_dir(settings.model_dir))
        key = (directory, settings.provider)
        with self._lock:
            if self._model is None or self._model_key != key:
                log.info("loading model %s on provider %s", directory, settings.provider)
                self._model = load_model(directory, provider=settings.provider)
                self._model_key = key
            return self._model

    @property
    def loaded_model(self) -> Model | None:
        return self._model

    def forget_model(self) -> None:
        with self._lock:
            self._model, self._model_key = None, None

    # -- indexes ------------------------------------------------------------------------------
    def all_indexes(self, model_sha: str | None = None) -> list[TileIndex]:
        return list_indexes(model_sha256=model_sha)

    def indexes_for(self, identity: dict, info: ModelInfo, settings: PluginSettings,
                    candidates: list[TileIndex] | None = None, ground_m: float | None = None,
                    current_grid_only: bool = False) -> list[TileIndex]:
        """Finished indexes of one raster identity made by the model; the current grid first.

        Online layers (identity without a file path) may have several indexes, one per indexed
        extent; all of them are returned. A file has one: the current grid's (``ground_m``: its pixel
        size, for the automatic tile size), else the newest on another grid (searching still works
        after the tile size changed) unless ``current_grid_only``.
        """
        candidates = self.all_indexes(info.sha256) if candidates is None else candidates
        grid = info.grid(settings, ground_m).to_dict()
        if "path" in identity:
            same = [i for i in candidates if i.meta["raster"].get("identity") == identity]
            current = [i for i in same if i.meta.get("grid") == grid]
            older = [] if current_grid_only else sorted(same, key=lambda i: i.meta.get("created", ""))[-1:]
            chosen = current or older
        else:
            chosen = [i for i in candidates
                      if i.meta["raster"].get("identity", {}).get("source") == identity.get("source")
                      and i.meta["raster"].get("identity", {}).get("bands") == identity.get("bands")]
        return [self.shared(index) for index in chosen]

    def other_model_indexes(self, identity: dict, info: ModelInfo) -> int:
        """How many indexes of this raster exist for other models (to explain 'not indexed')."""
        count = 0
        for index in list_indexes():
            same = index.meta["raster"].get("identity") == identity
            if same and index.meta["model"]["sha256"] != info.sha256:
                count += 1
        return count

    def shared(self, index: TileIndex) -> TileIndex:
        """One ``TileIndex`` object per folder, so its faiss index is loaded once per session."""
        with self._lock:
            known = self._open_indexes.get(str(index.directory))
            if known is None or known.meta.get("created") != index.meta.get("created"):
                self._open_indexes[str(index.directory)] = index
                known = index
            return known

    def drop_index(self, directory: Path) -> None:
        with self._lock:
            self._open_indexes.pop(str(directory), None)
