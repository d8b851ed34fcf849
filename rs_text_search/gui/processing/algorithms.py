"""Processing algorithms: index raster layers, search by text, find similar tiles.

Each one does what the dock does, so the work can run in models, batch mode and ``qgis_process``.
Layers are looked at in ``prepareAlgorithm`` (main thread: providers are cloned there);
``processAlgorithm`` may run in a background thread and only uses those copies. The search
algorithms write a polygon layer with the engine's export fields, styled like the dock's results.
"""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterPoint,
    QgsProcessingParameterString,
    QgsWkbTypes,
)

from ...core.errors import Cancelled, RsTextSearchError
from ...core.indexing import build_index, choose_tile_size
from ...core.search import Searcher
from ...core.tiling import GridSpec
from .. import deps
from ..canvas import crs_string
from ..crs import crs_from_string, qgis_transforms
from ..engine import Engine
from ..layers import result_features, result_fields, style_results_layer
from ..meta import help_url
from ..settings import PROVIDERS, PluginSettings
from ..source import QgisRasterSource, is_online, layer_ground_m, lookup_identity

__all__ = ["IndexLayersAlgorithm", "SearchTextAlgorithm", "FindSimilarAlgorithm"]


class _Base(QgsProcessingAlgorithm):
    """Model parameters shared by all algorithms, and the engine they share with the dock."""

    def __init__(self, engine: Engine | None = None) -> None:
        super().__init__()
        self.engine = engine or Engine()

    def createInstance(self):  # noqa: N802 - QGIS API
        return type(self)(self.engine)

    def group(self) -> str:  # no group: the algorithms sit right under the "RS Text Search" provider
        return ""

    def groupId(self) -> str:  # noqa: N802
        return ""

    def helpUrl(self) -> str:  # noqa: N802
        return help_url()

    def _model_parameters(self) -> None:
        defaults = PluginSettings.load()
        model = QgsProcessingParameterFile("MODEL", "Model folder (empty: the plugin's model)",
                                           behavior=QgsProcessingParameterFile.Behavior.Folder, optional=True)
        model.setFlags(model.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(model)
        device = QgsProcessingParameterEnum("DEVICE", "Runs on", options=["Auto", "CUDA", "CPU"],
                                            defaultValue=PROVIDERS.index(defaults.provider))
        device.setFlags(device.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(device)

    def _check_dependencies(self) -> None:
        """One sentence instead of a ModuleNotFoundError traceback when QGIS's Python lacks a package."""
        missing = deps.missing_modules()
        if missing:
            raise QgsProcessingException(f"{deps.missing_sentence(missing)}; install "
                                         f"{'it' if len(missing) == 1 else 'them'} with 'Install missing "
                                         "dependencies…' in the RS Text Search menu, then restart QGIS.")

    def _settings(self, parameters: dict, context: QgsProcessingContext) -> PluginSettings:
        settings = PluginSettings.load()
        folder = self.parameterAsFile(parameters, "MODEL", context)
        if folder:
            settings.model_dir = folder
        settings.provider = PROVIDERS[self.parameterAsEnum(parameters, "DEVICE", context)]
        return settings

    def _model(self, feedback: QgsProcessingFeedback):
        try:
            model = self.engine.model(self.settings)
        except RsTextSearchError as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.pushInfo(f"Model {model.name} runs on {model.provider.upper()}.")
        return model


class IndexLayersAlgorithm(_Base):
    def name(self) -> str:
        return "index_raster_layers"

    def displayName(self) -> str:  # noqa: N802
        return "Index raster layers"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Cuts raster layers into tiles and embeds every tile with the model, so the layers can be searched "
                "by text or by example. Indexes are cached outside the project and reused; a cancelled run "
                "resumes where it stopped. Online layers (XYZ, WMS) need an extent and a pixel size.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers("LAYERS", "Raster layers",
                                                               QgsProcessing.SourceType.TypeRaster))
        self.addParameter(QgsProcessingParameterNumber("TILE_SIZE", "Tile size in pixels (0: automatic)",
                                                       QgsProcessingParameterNumber.Type.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber("OVERLAP", "Tile overlap (fraction of a tile)",
                                                       QgsProcessingParameterNumber.Type.Double, 0.0, minValue=0.0,
                                                       maxValue=0.9))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Extent for online layers", optional=True))
        self.addParameter(QgsProcessingParameterNumber("PIXEL_SIZE", "Pixel size for online layers (layer units)",
                                                       QgsProcessingParameterNumber.Type.Double, None, optional=True,
                                                       minValue=0.0))
        self._model_parameters()
        self.addOutput(QgsProcessingOutputNumber("TILES", "Tiles embedded"))
        self.addOutput(QgsProcessingOutputString("INDEXES", "Index folders"))

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802 - main thread
        self._check_dependencies()
        self.settings = self._settings(parameters, context)
        self.settings.tile_size_px = self.parameterAsInt(parameters, "TILE_SIZE", context)
        self.settings.overlap = self.parameterAsDouble(parameters, "OVERLAP", context)
        self.sources = []
        for layer in self.parameterAsLayerList(parameters, "LAYERS", context):
            extent = resolution = None
            try:
                if is_online(layer):
                    extent = self.parameterAsExtent(parameters, "EXTENT", context, layer.crs())
                    resolution = self.parameterAsDouble(parameters, "PIXEL_SIZE", context) or None
                    extent = None if extent.isNull() else extent
                self.sources.append(QgisRasterSource(layer, extent, resolution, context.transformContext()))
            except RsTextSearchError as exc:
                raise QgsProcessingException(str(exc)) from exc
        if not self.sources:
            raise QgsProcessingException("Choose at least one raster layer to index.")
        return True

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        model = self._model(feedback)
        total_tiles, folders = 0, []
        for position, source in enumerate(self.sources):
            def progress(done: int, total: int, position: int = position) -> None:
                feedback.setProgress(100.0 * (position + done / max(total, 1)) / len(self.sources))

            try:
                tiles = choose_tile_size(source, model, self.settings.tile_size_px)
                if not self.settings.tile_size_px:  # the automatic size is said; a given one is known
                    (feedback.pushWarning if tiles.far else feedback.pushInfo)(f"{source.name}: {tiles.why}.")
                grid = GridSpec(tiles.px, self.settings.overlap)
                index, stats = build_index(source, model, grid, progress=progress, is_cancelled=feedback.isCanceled)
            except Cancelled as exc:
                raise QgsProcessingException(str(exc)) from exc
            except RsTextSearchError as exc:
                raise QgsProcessingException(str(exc)) from exc
            feedback.pushInfo(f"{source.name}: {stats.tiles_embedded} tiles embedded -> {index.directory}")
            total_tiles += stats.tiles_embedded
            folders.append(str(index.directory))
        return {"TILES": total_tiles, "INDEXES": "\n".join(folders)}


class _SearchBase(_Base):
    """Common parameters and output of the two search algorithms."""

    def _search_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterMultipleLayers("LAYERS", "Search only these raster layers",
                                                               QgsProcessing.SourceType.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Search only inside this extent", optional=True))
        self.addParameter(QgsProcessingParameterNumber("TOP_K", "Number of results",
                                                       QgsProcessingParameterNumber.Type.Integer, 20, minValue=1))
        self.addParameter(QgsProcessingParameterNumber("MIN_SCORE", "Minimum score",
                                                       QgsProcessingParameterNumber.Type.Double, None, optional=True,
                                                       minValue=-1.0, maxValue=1.0))
        self._model_parameters()
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", "Matching tiles",
                                                            QgsProcessing.SourceType.TypeVectorPolygon))

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802 - main thread
        self._check_dependencies()
        self.settings = self._settings(parameters, context)
        try:
            info = self.engine.model_info(self.settings)
        except (RsTextSearchError, OSError) as exc:
            raise QgsProcessingException(str(exc)) from exc
        candidates = self.engine.all_indexes(info.sha256)
        layers = self.parameterAsLayerList(parameters, "LAYERS", context)
        if layers:
            self.indexes = []
            for layer in layers:
                found = self.engine.indexes_for(lookup_identity(layer), info, self.settings, candidates,
                                                layer_ground_m(layer))
                if not found:
                    raise QgsProcessingException(f"'{layer.name()}' is not indexed with the model '{info.name}'; "
                                                 "run 'Index raster layers' first.")
                self.indexes += found
        else:
            self.indexes = [self.engine.shared(index) for index in candidates]
        if not self.indexes:
            raise QgsProcessingException(f"Nothing is indexed with the model '{info.name}' yet; "
                                         "run 'Index raster layers' first.")
        self.bbox = self.bbox_crs = None
        if parameters.get("EXTENT"):
            extent = self.parameterAsExtent(parameters, "EXTENT", context)
            if not extent.isNull():
                self.bbox = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
                self.bbox_crs = crs_string(self.parameterAsExtentCrs(parameters, "EXTENT", context))
        self.transforms = qgis_transforms(context.transformContext())
        self.top_k = self.parameterAsInt(parameters, "TOP_K", context)
        self.min_score = self.parameterAsDouble(parameters, "MIN_SCORE", context) \
            if parameters.get("MIN_SCORE") not in (None, "") else None
        self.dest_id = None
        return True

    def _run(self, parameters, context, feedback, label: str, **query) -> dict:
        model = self._model(feedback)
        try:
            searcher = Searcher(model, self.indexes, transform_bounds=self.transforms[0],
                                transform_point=self.transforms[1])
            point = query.pop("point", None)
            if point is not None:
                example = searcher.tile_at(*point)
                query["tiles"] = list(query.get("tiles", [])) + [example]
                feedback.pushInfo(f"Example tile: {example}")
            results = searcher.search(top_k=self.top_k, min_score=self.min_score, bbox=self.bbox,
                                      bbox_crs=self.bbox_crs, **query)
        except RsTextSearchError as exc:
            raise QgsProcessingException(str(exc)) from exc
        fields = result_fields()
        features, crs_wkt = result_features(results, label, model.name, model.sha256, fields)
        crs_wkt = crs_wkt if results else self.indexes[0].crs_wkt
        crs = crs_from_string(crs_wkt) if crs_wkt else QgsCoordinateReferenceSystem()
        sink, self.dest_id = self.parameterAsSink(parameters, "OUTPUT", context, fields, QgsWkbTypes.Type.Polygon, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        sink.addFeatures(features, QgsFeatureSink.Flag.FastInsert)
        feedback.pushInfo(f"{len(results)} matching tiles.")
        return {"OUTPUT": self.dest_id}

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 - main thread
        layer = context.getMapLayer(self.dest_id) if self.dest_id else None
        if layer is not None:
            style_results_layer(layer)
        return {"OUTPUT": self.dest_id}


class SearchTextAlgorithm(_SearchBase):
    def name(self) -> str:
        return "search_by_text"

    def displayName(self) -> str:  # noqa: N802
        return "Search imagery by text"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Finds the indexed tiles that best match a description, e.g. 'parking lot with cars', optionally "
                "steering away from another description, and writes them as polygons with their score and rank.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterString("QUERY", "What to look for"))
        self.addParameter(QgsProcessingParameterString("NEGATIVE", "Steer away from (optional)", optional=True))
        self._search_parameters()

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        text = self.parameterAsString(parameters, "QUERY", context)
        negative = self.parameterAsString(parameters, "NEGATIVE", context).strip()
        return self._run(parameters, context, feedback, text, texts=[text],
                         negative_texts=[negative] if negative else [])


class FindSimilarAlgorithm(_SearchBase):
    def name(self) -> str:
        return "find_similar_tiles"

    def displayName(self) -> str:  # noqa: N802
        return "Find similar tiles"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Finds the indexed tiles that look like an example: the tile under a point, or tiles given by id "
                "(the tile_id field of a result layer), and writes them as polygons with their score and rank.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterPoint("POINT", "Example: the tile under this point", optional=True))
        self.addParameter(QgsProcessingParameterString("TILE_IDS", "Example tile ids (comma separated)",
                                                       optional=True))
        self._search_parameters()

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        tile_ids = [t.strip() for t in self.parameterAsString(parameters, "TILE_IDS", context).split(",") if t.strip()]
        self.point = None
        if parameters.get("POINT"):
            crs = self.parameterAsPointCrs(parameters, "POINT", context)
            point = self.parameterAsPoint(parameters, "POINT", context)
            self.point = (point.x(), point.y(), crs_string(crs) if crs.isValid() else None)
        if not tile_ids and self.point is None:
            raise QgsProcessingException("Give a point on an indexed layer or at least one tile id as the example.")
        label = "similar to " + (", ".join(tile_ids) if tile_ids else f"the tile at {self.point[0]:.6g}, "
                                 f"{self.point[1]:.6g}")
        return self._run(parameters, context, feedback, label, tiles=tile_ids, point=self.point)


ALGORITHMS = (IndexLayersAlgorithm, SearchTextAlgorithm, FindSimilarAlgorithm)
