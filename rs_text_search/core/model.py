"""Model directories: manifest, ONNX Runtime sessions, the execution provider that actually ran.

A model directory is self-describing (what ``training.export`` writes, what the engine loads)::

    <name>/
      manifest.json   see MANIFEST_SCHEMA_VERSION and ``read_manifest`` below
      image.onnx      float32 [N,3,S,S] -> [N,D]
      text.onnx       int64 input_ids [N,L] (+ attention_mask [N,L] when listed) -> [N,D]
      vocab/...       tokenizer files

manifest.json (schema 1)::

    {"schema_version": 1, "name": str, "embed_dim": int,
     "image": {"file": "image.onnx", "size": 224, "mean": [3], "std": [3],
               "interpolation": "bicubic"|"bilinear", "resize_mode": "squash"|"shortest"},
     "text": {"file": "text.onnx", "inputs": ["input_ids", ("attention_mask")],
              "tokenizer": {"kind": "clip_bpe"|"wordpiece", "vocab": "vocab/<file>",
                            "context_length": int, ...}},
     "logit_scale": float,
     "training": {...}, "metrics": {...},          # provenance, free-form
     "files": {"image.onnx": "<sha256>", ...}}     # every file above, checked on load

Embeddings returned by ``Model`` are always L2-normalised float32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelError
from .preprocess import ImageSpec, preprocess
from .tokenize import load_tokenizer

__all__ = [
    "MANIFEST_SCHEMA_VERSION",
    "DEFAULT_MODEL_NAME",
    "Model",
    "load_model",
    "resolve_model_dir",
    "read_manifest",
    "file_sha256",
    "available_providers",
    "BATCH_SIZES",
]

log = logging.getLogger(__name__)

MANIFEST_SCHEMA_VERSION = 1
DEFAULT_MODEL_NAME = "rs-default"
PROVIDERS = ("auto", "cuda", "cpu")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
# Images per ONNX call, by the provider in use. CPU 16: in the benchmark's interleaved rounds the fastest
# indexing setting (211 against 202 tiles/s at 32, 203 at 64) and the smallest ORT working set
# (75 MiB of activations above the loaded model, 160 at 32; BENCHMARKS.md figures 2 and 4).
# CUDA 64: not measured (no GPU on the machines the defaults were tuned on); a GPU wants larger batches.
BATCH_SIZES = {"cpu": 16, "cuda": 64}


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def model_search_path() -> list[Path]:
    """Folders searched for a model given by name: $RS_TEXT_SEARCH_MODELS, then the bundled models."""
    here = Path(__file__).resolve()
    paths = [Path(p) for p in os.environ.get("RS_TEXT_SEARCH_MODELS", "").split(os.pathsep) if p]
    # Packaged plugin: rs_text_search/resources/models; source checkout: <repo>/resources/models.
    paths += [here.parents[1] / "resources" / "models", here.parents[2] / "resources" / "models"]
    return paths


def resolve_model_dir(path_or_name: str | os.PathLike | None) -> Path:
    """A model directory from a path, or from a name looked up in ``model_search_path()``."""
    name = str(path_or_name) if path_or_name else DEFAULT_MODEL_NAME
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    if candidate.suffix == ".json" and candidate.is_file():
        return candidate.parent.resolve()
    for folder in model_search_path():
        if (folder / name / "manifest.json").is_file():
            return (folder / name).resolve()
    raise ModelError(f"No model directory found at '{name}' (looked for a folder with manifest.json).")


def read_manifest(model_dir: Path, verify_files: bool = True) -> dict:
    """Load and check manifest.json; with verify_files, every listed file must match its sha256."""
    manifest_path = model_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"The model directory '{model_dir}' has no manifest.json.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"The model manifest '{manifest_path}' is not valid JSON ({exc}).") from None
    version = manifest.get("schema_version")
    if version != MANIFEST_SCHEMA_VERSION:
        raise ModelError(
            f"The model manifest '{manifest_path}' has schema version {version!r}; "
            f"this version of rs_text_search reads version {MANIFEST_SCHEMA_VERSION}."
        )
    for key in ("name", "embed_dim", "image", "text", "files"):
        if key not in manifest:
            raise ModelError(f"The model manifest '{manifest_path}' lacks the '{key}' entry.")
    if verify_files:
        for rel, expected in manifest["files"].items():
            path = model_dir / rel
            if not path.is_file():
                raise ModelError(f"The model directory '{model_dir}' lacks '{rel}', listed in its manifest.")
            if file_sha256(path) != expected:
                raise ModelError(
                    f"'{rel}' in '{model_dir}' does not match the checksum in its manifest "
                    "(the model is damaged or was edited)."
                )
    return manifest


def manifest_ground_m_per_px(manifest: dict) -> float | None:
    """The manifest's ``ground_m_per_px``: metres of ground per model input pixel in the training imagery
    (UCM-Captions: 0.3048 m pixels, 256-pixel images shown at 128 -> 0.61). Optional; it sets the default
    tile size (``core.indexing.auto_tile_size``) and is not part of the model's identity."""
    value = manifest.get("ground_m_per_px")
    try:
        value = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value and value > 0 else None


def model_sha256(manifest: dict) -> str:
    """Identity of a model's embedding space, the key of every index it makes: the image tower's checksum
    plus the settings that change tile embeddings (input size, normalisation, resizing) and their width.

    The text side (text.onnx, tokenizer) is left out on purpose: an index holds image embeddings only,
    and a model whose text side alone was re-fitted to the same image tower (``training.realign``,
    ``training.quantize``) searches the indexes it already has instead of making the user embed every
    raster again. A new image tower, or new preprocessing, is a new identity."""
    image_file = manifest["image"].get("file", "image.onnx")
    identity = {
        "image_file": manifest["files"].get(image_file),
        "image": manifest["image"],
        "embed_dim": manifest["embed_dim"],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _session(path: Path, provider: str, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT warns loudly when CUDA libraries are absent
    # Idle intra-op threads would spin and steal the cores the pipeline's reader threads need
    # (BENCHMARKS.md figure 2: +27 % indexing throughput on 2 cores with spinning off).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # ORT's memory pattern pre-plans one block for every activation of a batch shape; without it the
    # arena reuses freed blocks: 110 MiB less resident memory at batch 32 on the bundled model, at the
    # same speed (measured side by side, BENCHMARKS.md figure 4).
    options.enable_mem_pattern = False
    if threads:
        options.intra_op_num_threads = threads
    wanted = [_CUDA, _CPU] if provider in ("auto", "cuda") else [_CPU]
    wanted = [p for p in wanted if p in ort.get_available_providers()]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types; one sentence for the user
        if provider == "auto" and _CUDA in wanted:
            log.warning("CUDA session failed (%s); falling back to CPU", exc)
            return _session(path, "cpu", threads)
        raise ModelError(f"ONNX Runtime could not load '{path.name}': {exc}") from exc
    used = session.get_providers()
    if provider == "cuda" and used[0] != _CUDA:
        raise ModelError(
            "The CUDA execution provider was requested but is not usable here "
            f"(ONNX Runtime runs on {used[0]}); install onnxruntime-gpu with a matching CUDA, or choose CPU."
        )
    return session


@dataclass
class Model:
    """A loaded model: ``embed_images`` and ``embed_texts`` return L2-normalised float32 [N, D]."""

    directory: Path
    manifest: dict
    provider: str
    sha256: str
    image_spec: ImageSpec
    batch_size: int = BATCH_SIZES["cpu"]
    _image_session: object = field(repr=False, default=None)
    _text_session: object = field(repr=False, default=None)
    _tokenizer: object = field(repr=False, default=None)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def embed_dim(self) -> int:
        return int(self.manifest["embed_dim"])

    @property
    def image_size(self) -> int:
        return self.image_spec.size_px

    @property
    def ground_m_per_px(self) -> float | None:
        """Metres of ground per input pixel in the imagery the model was trained on (None: not recorded)."""
        return manifest_ground_m_per_px(self.manifest)

    def preprocess(self, images: np.ndarray | list[np.ndarray]) -> np.ndarray:
        return preprocess(images, self.image_spec)

    def embed_preprocessed(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N,3,S,S] already preprocessed -> normalised [N,D] (one ONNX call per batch_size)."""
        session = self._image_session
        name = session.get_inputs()[0].name
        outputs = [
            session.run(None, {name: np.ascontiguousarray(batch[i : i + self.batch_size])})[0]
            for i in range(0, len(batch), self.batch_size)
        ]
        return _normalise(np.concatenate(outputs) if outputs else np.zeros((0, self.embed_dim)))

    def embed_images(self, images: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """uint8 [N,H,W,3] (any H, W) -> L2-normalised float32 [N,D]."""
        return self.embed_preprocessed(self.preprocess(images))

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self._tokenizer(texts)

    def knows_words(self, text: str) -> bool:
        """Whether ``text`` holds anything the text encoder was trained on: a letter or digit, tokenised to
        something other than the unknown token (emoji, or a 100-letter "word", are only [UNK] to WordPiece)."""
        if not any(char.isalnum() for char in text):
            return False
        unknown = getattr(self._tokenizer, "unk_id", None)
        return unknown is None or any(token != unknown for token in self._tokenizer.encode(text))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Sentences -> L2-normalised float32 [N,D]."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        session = self._text_session
        tokens = self._tokenizer(list(texts))
        names = [i.name for i in session.get_inputs()]
        feeds = {name: tokens[name] for name in names}
        return _normalise(session.run(None, feeds)[0])


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def load_model(
    path_or_name: str | os.PathLike | None = None,
    provider: str = "auto",
    threads: int | None = None,
    batch_size: int | None = None,
    verify_files: bool = True,
) -> Model:
    """Load a model directory (or a model name, ``None`` for the default) with ONNX Runtime.

    provider: ``"auto"`` (CUDA when it really works, else CPU), ``"cuda"`` (error when CUDA does
    not run) or ``"cpu"``. ``Model.provider`` is the provider the image session actually uses.
    batch_size: images per ONNX call; None: ``BATCH_SIZES`` of that provider.
    """
    if provider not in PROVIDERS:
        raise ModelError(f"Unknown execution provider '{provider}'; choose one of {', '.join(PROVIDERS)}.")
    directory = resolve_model_dir(path_or_name)
    manifest = read_manifest(directory, verify_files=verify_files)
    image_session = _session(directory / manifest["image"].get("file", "image.onnx"), provider, threads)
    text_session = _session(directory / manifest["text"].get("file", "text.onnx"), provider, threads)
    used = image_session.get_providers()[0]
    provider_used = {_CUDA: "cuda", _CPU: "cpu"}.get(used, used)
    return Model(
        directory=directory,
        manifest=manifest,
        provider=provider_used,
        sha256=model_sha256(manifest),
        image_spec=ImageSpec.from_manifest(manifest["image"]),
        batch_size=batch_size or BATCH_SIZES.get(provider_used, BATCH_SIZES["cpu"]),
        _image_session=image_session,
        _text_session=text_session,
        _tokenizer=load_tokenizer(manifest["text"]["tokenizer"], directory),
    )
