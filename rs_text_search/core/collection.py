"""Named collections: a set of rasters indexed with one model and searched as one vector index.

``<cache>/collections/<name>/collection.json`` records the model (name + sha256), the index options, the
sources as the user gave them (raster files, folders with a glob, VRTs, text files of paths; made
absolute), the rasters left out with ``--remove`` and, per member raster, its path, index key and tile
count. The per-raster indexes (``core.index``) stay the unit of indexing and resume; the collection's
merged vector index lives in ``merged/`` beside collection.json (``core.merged``).

Syncing a collection (``plan_sync`` then ``sync_members``): its sources are expanded again (a folder's
new files join, deleted files leave), members whose file and index are unchanged are kept without
opening the raster, and only the others (new, changed, or whose index is unfinished or damaged) go to
indexing. A changed file gets a new index key (``indexing.build_index`` removes the superseded index),
and the member's key is replaced, so its old tiles leave the collection.

A VRT source is expanded to its source files rather than indexed as one raster: each file is then its
own member, so a changed or added file re-indexes only itself, whereas a VRT's index key follows the VRT
file alone (a changed source file under it would go unnoticed, and any re-index would embed the mosaic).
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .cache import atomic_write_json, cache_root
from .errors import CollectionError
from .index import TileIndex
from .merged import verified_members
from .scan import SkippedIndex, check_index

__all__ = ["Collection", "check_name", "expand_sources", "list_collections", "RASTER_SUFFIXES", "COLLECTION_VERSION"]

COLLECTION_VERSION = 1
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img")  # a folder's rasters without --glob (any depth)
LIST_SUFFIXES = (".txt", ".lst")


def check_name(name: str) -> str:
    """``name`` when it can name a collection folder, else CollectionError with one sentence."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise CollectionError(f"{name!r} is not a collection name; use up to 64 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit.")
    return name


def collections_root(root: Path | None = None, create: bool = False) -> Path:
    return (root or cache_root(create=create)) / "collections"


@dataclass
class Collection:
    name: str
    model: dict  # {"name", "sha256"}
    options: dict  # index options: {"tile_size", "overlap", "bands"} (None: the engine's default)
    sources: list[dict] = field(default_factory=list)  # {"path": absolute, "glob": pattern or None}
    members: list[dict] = field(default_factory=list)  # {"raster": path, "key": index key, "tiles": embedded}
    removed: list[str] = field(default_factory=list)  # rasters left out with --remove (not re-added by a sync)
    updated: str = ""
    root: Path | None = field(default=None, repr=False, compare=False)  # the cache (None: the user's)

    @property
    def directory(self) -> Path:
        return collections_root(self.root) / self.name

    @property
    def merged_dir(self) -> Path:
        return self.directory / "merged"

    @property
    def tiles(self) -> int:
        return sum(int(m.get("tiles") or 0) for m in self.members)

    @classmethod
    def load(cls, name: str, root: Path | None = None) -> Collection:
        path = collections_root(root) / check_name(name) / "collection.json"
        if not path.is_file():
            raise CollectionError(f"There is no collection '{name}'; make it with 'index --collection {name} "
                                  "SOURCE...'.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.pop("version", None) != COLLECTION_VERSION:
                raise ValueError("another version")
            return cls(**data, root=root)
        except (OSError, ValueError, TypeError) as exc:
            raise CollectionError(f"The collection '{name}' cannot be read ({exc}); index it again with 'index "
                                  f"--collection {name} SOURCE...' after removing '{path.parent}'.") from None

    def save(self) -> None:
        self.updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        payload = {"version": COLLECTION_VERSION, **{k: v for k, v in asdict(self).items() if k != "root"}}
        atomic_write_json(self.directory / "collection.json", payload)

    def check_model(self, model_name: str, model_sha256: str) -> None:
        if self.model["sha256"] != model_sha256:
            raise CollectionError(f"The collection '{self.name}' is indexed with model '{self.model['name']}', not "
                                  f"the model in use ('{model_name}'); choose it with --model or make another "
                                  "collection.")

    def add_sources(self, sources: list[dict]) -> None:
        """Add sources (already expanded once, so known to exist); a raster named again is no longer removed."""
        for source in sources:
            if source not in self.sources:
                self.sources.append(source)
            if source["glob"] is None:
                self.removed = [r for r in self.removed if r != source["path"]]

    def remove(self, rasters: list[str]) -> list[dict]:
        """Leave rasters out (their own source entries go, and a re-sync of a folder does not add them back);
        returns the members removed. Raises CollectionError for a raster that is not a member."""
        wanted = [str(Path(r).expanduser().resolve()) for r in rasters]
        members = {m["raster"]: m for m in self.members}
        unknown = [r for r, w in zip(rasters, wanted) if w not in members]
        if unknown:
            raise CollectionError(f"'{unknown[0]}' is not a raster of the collection '{self.name}'.")
        self.members = [m for m in self.members if m["raster"] not in wanted]
        self.sources = [s for s in self.sources if not (s["glob"] is None and s["path"] in wanted)]
        self.removed = sorted(set(self.removed) | set(wanted))
        return [members[w] for w in wanted]

    # -- syncing -------------------------------------------------------------------------------------
    def plan_sync(self, index_root: Path | None = None) -> tuple[list[dict], list[Path], list[str]]:
        """(members kept as they are, raster paths to index, warnings) for the sources as they are now."""
        rasters, warnings = expand_sources(self.sources, strict=False)
        removed = set(self.removed)
        members = {m["raster"]: m for m in self.members}
        folder = (index_root or cache_root(create=False)) / "indexes"
        kept, todo = [], []
        for raster in rasters:
            if str(raster) in removed:
                continue
            member = members.get(str(raster))
            if member is not None and _unchanged(folder / member["key"]):
                kept.append(member)
            else:
                todo.append(raster)
        return kept, todo, warnings

    def sync_members(self, kept: list[dict], indexed: list[TileIndex]) -> None:
        """The members after a sync: those kept and those just indexed (their current keys), in path order."""
        fresh = [{"raster": str(Path(i.raster_uri).resolve()), "key": i.key,
                  "tiles": int(i.meta["counts"]["embedded"])} for i in indexed]
        by_raster = {m["raster"]: m for m in [*kept, *fresh]}
        self.members = [by_raster[r] for r in sorted(by_raster)]

    def member_indexes(self, index_root: Path | None = None,
                       deep: bool = True) -> tuple[list[TileIndex], list[SkippedIndex]]:
        """The members' indexes that can be searched, and why the others are skipped (as ``scan_indexes``; those
        whose files did not change since the collection's merged index recorded them verified are not checked
        again)."""
        folder = (index_root or cache_root(create=False)) / "indexes"
        verified = verified_members(self.merged_dir) if deep else {}
        found, skipped = [], []
        for member in self.members:
            directory = folder / member["key"]
            if not (directory / "meta.json").is_file():
                skipped.append(SkippedIndex(directory, Path(member["raster"]).stem, "its index is no longer in the "
                                            f"cache; run 'index --collection {self.name}' to index it again",
                                            member["raster"]))
                continue
            checked = check_index(directory, self.model["sha256"], deep, True, verified.get(member["key"]))
            if isinstance(checked, TileIndex):
                found.append(checked)
            elif checked is not None:
                skipped.append(checked)
        return found, skipped


def _unchanged(directory: Path) -> bool:
    """Whether an index folder is finished (cheap checks) and its raster file is as it was indexed."""
    if not (directory / "meta.json").is_file():
        return False
    checked = check_index(directory, deep=False, check_rasters=True)
    return isinstance(checked, TileIndex)


def list_collections(root: Path | None = None) -> list[Collection]:
    """Every readable collection in the cache, by name (unreadable ones raise when loaded by name)."""
    folder = collections_root(root)
    found = []
    for path in sorted(folder.glob("*/collection.json")) if folder.is_dir() else []:
        try:
            found.append(Collection.load(path.parent.name, root))
        except CollectionError:
            continue
    return found


# -- sources ---------------------------------------------------------------------------------------------
def source_entry(path: str, glob: str | None = None) -> dict:
    """A source as the collection records it: the path made absolute, and the glob for a folder."""
    resolved = Path(path).expanduser().resolve()
    return {"path": str(resolved), "glob": (glob or None) if resolved.is_dir() else None}


def expand_sources(sources: list[dict], strict: bool = True) -> tuple[list[Path], list[str]]:
    """The raster files of sources, absolute and each once, in order; and a warning per source that is gone.

    strict: a source that does not exist, or a list or VRT that cannot be read, raises CollectionError (new
    sources on the command line); else it gives a warning and no rasters (a re-sync of recorded sources).
    """
    rasters, warnings = {}, []
    for source in sources:
        try:
            for raster in _expand(Path(source["path"]), source.get("glob")):
                rasters.setdefault(raster, None)
        except CollectionError as exc:
            if strict:
                raise
            warnings.append(str(exc))
    return list(rasters), warnings


def _expand(path: Path, glob: str | None, depth: int = 0) -> list[Path]:
    if depth > 8:
        raise CollectionError(f"'{path}' nests lists or VRTs more than 8 deep; is one including itself?")
    if path.is_dir():
        if glob:
            found = [p for p in path.glob(glob) if p.is_file()]
        else:
            found = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES]
        return sorted(p.resolve() for p in found)
    if not path.is_file():
        raise CollectionError(f"The source '{path}' does not exist.")
    suffix = path.suffix.lower()
    if suffix in LIST_SUFFIXES:
        return [r for listed in _read_list(path) for r in _expand(listed, None, depth + 1)]
    if suffix == ".vrt":
        return [r for listed in vrt_sources(path) for r in _expand(listed, None, depth + 1)]
    return [path.resolve()]


def _read_list(path: Path) -> list[Path]:
    """The paths in a text file, one a line (blank lines and '#' comments skipped; relative to the file)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CollectionError(f"The list of rasters '{path}' cannot be read ({exc}).") from None
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [(path.parent / Path(entry).expanduser()) for entry in entries]


def vrt_sources(path: Path) -> list[Path]:
    """The source files a GDAL VRT mosaics (``SourceFilename``; ``relativeToVRT="1"``: relative to the VRT)."""
    try:
        tree = ElementTree.parse(path)
    except (OSError, ElementTree.ParseError) as exc:
        raise CollectionError(f"The VRT '{path}' cannot be read ({exc}).") from None
    found = {}
    for element in tree.iter("SourceFilename"):
        name = (element.text or "").strip()
        if not name or name.startswith("/vsi"):
            continue  # a source inside an archive or online: not a file a collection can track
        relative = element.get("relativeToVRT", "0") == "1"
        found.setdefault(path.parent / name if relative else Path(name), None)
    if not found:
        raise CollectionError(f"The VRT '{path}' names no source file.")
    return list(found)
