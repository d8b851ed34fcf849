"""Exceptions of the engine. Each message is one sentence a GIS analyst can act on.

The command line prints ``str(exc)`` and exits with 2; the plugin shows it in the message bar.
"""

from __future__ import annotations


class RsTextSearchError(Exception):
    """Base class: anything the user can fix (bad input, missing model, unreadable file)."""


class ModelError(RsTextSearchError):
    """The model directory is missing, damaged, or cannot run on the requested provider."""


class RasterError(RsTextSearchError):
    """The raster cannot be opened or read, or its band layout is not supported."""


class IndexMismatchError(RsTextSearchError):
    """An index was made by another model or tile grid and must not be mixed in."""


class IndexDamagedError(RsTextSearchError):
    """An index folder is damaged or unfinished; the next ``index`` run of its raster rebuilds it."""


class CacheError(RsTextSearchError):
    """The cache folder cannot be created or written (permissions, a full disk)."""


class QueryError(RsTextSearchError):
    """The query is empty, names a tile that does not exist, or has nothing to search."""


class ExportError(RsTextSearchError):
    """Results could not be written to the requested file."""


class ClusterError(RsTextSearchError):
    """Dask is missing, its scheduler does not answer, or a worker cannot see the rasters or the model."""


class Cancelled(RsTextSearchError):  # noqa: N818 - it is an outcome, not a failure
    """Work stopped because the user asked; everything finished so far is kept."""


class CollectionError(RsTextSearchError):
    """A collection name is not valid, the collection does not exist, or its sources cannot be read."""
