"""Faster drop-in versions of two engine functions, measured beside the engine's own (not used by it).

The pipeline figure showed that, per 224 px tile, the engine's ``indexing._classify`` and
``preprocess.preprocess`` cost more CPU than reading and decoding the tile, on a machine where
those stages share the cores with the encoder. These versions give bit-identical results
(checked by :func:`check_identical`) and are what the benchmark report proposes for the core:

- ``classify``: per-band min/max over a contiguous band-major copy (numpy reduces a contiguous
  row with SIMD; reducing ``values[:, c]`` with a 3-byte stride does not), and no boolean-mask copy
  when every pixel is valid (the usual case);
- ``preprocess``: write each tile straight into the batch as channels-first (one casting copy)
  and normalise the whole batch in place, instead of two temporary HxWx3 float arrays and a
  strided transpose per tile; a tile already at the model's size skips the resize entirely.

A third proposal is a setting: ONNX Runtime's intra-op threads spin while waiting for work
(``session.intra_op.allow_spinning`` defaults to on), which steals the cores from the reader
threads of the pipeline and from other processes, and collapses throughput when the machine is
busy; ``no_spin_session_options`` turns it off.

``install()`` patches them into the engine modules of the current process; only
:mod:`bench.index_child` (``--proposed``, ``--no-spin``) calls it, to measure the pipeline as it
would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from rs_text_search.core.index import STATUS
from rs_text_search.core.indexing import CONSTANT_TOLERANCE
from rs_text_search.core.preprocess import ImageSpec, _fit


def classify(rgb: np.ndarray, valid: np.ndarray) -> int:
    """Same result as ``rs_text_search.core.indexing._classify``."""
    if not valid.any():
        return STATUS["nodata"]
    bands = np.ascontiguousarray(rgb.transpose(2, 0, 1)).reshape(rgb.shape[2], -1)
    if not valid.all():
        bands = bands[:, valid.reshape(-1)]
    spread = bands.max(axis=1).astype(int) - bands.min(axis=1)
    return STATUS["constant"] if int(spread.max()) <= CONSTANT_TOLERANCE else STATUS["embedded"]


def preprocess(images: np.ndarray | list[np.ndarray], spec: ImageSpec) -> np.ndarray:
    """Same result as ``rs_text_search.core.preprocess.preprocess``."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[None]
    size = spec.size_px
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected uint8 HxWx3 images, got {image.dtype} {image.shape}")
        fitted = image if image.shape[:2] == (size, size) else _fit(image, spec)
        np.copyto(batch[i], fitted.transpose(2, 0, 1), casting="unsafe")  # uint8/float32 -> float32
    batch -= (np.asarray(spec.mean, dtype=np.float32) * 255.0)[:, None, None]
    batch *= (1.0 / (np.asarray(spec.std, dtype=np.float32) * 255.0))[:, None, None]
    return batch


def check_identical(tiles: list[tuple[np.ndarray, np.ndarray]], spec: ImageSpec) -> dict[str, float | bool]:
    """Compare with the engine's functions on real tiles: max abs difference and equal classes."""
    from rs_text_search.core.indexing import _classify
    from rs_text_search.core.preprocess import preprocess as engine_preprocess

    rgbs = [rgb for rgb, _ in tiles]
    cases = tiles + [(np.full_like(rgbs[0], 7), tiles[0][1]), (rgbs[0], np.zeros_like(tiles[0][1]))]
    half = np.ones_like(tiles[0][1])
    half[: half.shape[0] // 2] = False
    cases.append((rgbs[0], half))
    resized = [rgbs[0][: rgbs[0].shape[0] // 2]]  # a non-square tile goes through the resize path
    differences = [np.abs(preprocess(batch, spec) - engine_preprocess(batch, spec)).max() for batch in (rgbs, resized)]
    return {
        "classes_equal": all(classify(r, v) == _classify(r, v) for r, v in cases),
        "preprocess_max_abs_diff": float(max(differences)),
    }


def install(functions: bool = True, no_spin: bool = False) -> None:
    """Patch the proposals into the engine for this process (functions, and/or ORT without spinning)."""
    import rs_text_search.core.indexing as indexing
    import rs_text_search.core.model as model

    if functions:
        indexing._classify = classify
        model.preprocess = preprocess
    if no_spin:
        import onnxruntime

        with no_spin_sessions():
            patched = onnxruntime.SessionOptions
        onnxruntime.SessionOptions = patched  # for the rest of this process


@contextmanager
def no_spin_sessions() -> Iterator[None]:
    """ONNX Runtime sessions created inside this block do not spin (``load_model`` inside it)."""
    import onnxruntime

    original = onnxruntime.SessionOptions

    def no_spin_session_options():
        options = original()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    onnxruntime.SessionOptions = no_spin_session_options
    try:
        yield
    finally:
        onnxruntime.SessionOptions = original
