"""Tile pixels -> image-encoder input, exactly as the model manifest describes.

This is the one definition of image preprocessing: the engine calls it before ONNX Runtime
and the training package calls it at evaluation and for its final resize + normalise step,
so the plugin can never drift from what a model was trained with.

Resizing is a separable, antialiased filter written as two matrix products (the same
idea as Pillow's resampling: when shrinking, the filter support is widened by the scale
factor so every source pixel contributes). numpy only, deterministic, and fast because the
heavy part is a BLAS matmul.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["ImageSpec", "resize_uint8", "preprocess"]

# CLIP's mean/std, the usual default in open_clip configs.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageSpec:
    """How a model wants its images (the manifest's ``image`` section).

    size_px: side of the square input in pixels.
    mean, std: per-channel normalisation applied to values scaled to [0, 1].
    interpolation: ``"bilinear"`` (triangle filter) or ``"bicubic"`` (Keys a=-0.5).
    resize_mode: ``"squash"`` resizes the whole tile to size_px x size_px (right for map
        tiles, which are square already); ``"shortest"`` resizes the shorter side to size_px
        and centre-crops (open_clip's evaluation transform).
    """

    size_px: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    interpolation: str = "bicubic"
    resize_mode: str = "squash"

    @classmethod
    def from_manifest(cls, section: dict) -> ImageSpec:
        return cls(
            size_px=int(section["size"]),
            mean=tuple(float(v) for v in section["mean"]),
            std=tuple(float(v) for v in section["std"]),
            interpolation=str(section.get("interpolation", "bicubic")),
            resize_mode=str(section.get("resize_mode", "squash")),
        )

    def to_manifest(self) -> dict:
        return {
            "size": self.size_px,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
        }


def _kernel(name: str):
    if name == "bilinear":
        return 1.0, lambda x: np.clip(1.0 - np.abs(x), 0.0, None)
    if name == "bicubic":
        a = -0.5

        def cubic(x: np.ndarray) -> np.ndarray:
            x = np.abs(x)
            return np.where(
                x < 1.0,
                ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
                np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0),
            )

        return 2.0, cubic
    raise ValueError(f"unknown interpolation {name!r}; expected 'bilinear' or 'bicubic'")


@lru_cache(maxsize=64)
def _resize_matrix(in_size: int, out_size: int, interpolation: str) -> np.ndarray:
    """[out_size, in_size] float32 weights mapping input pixels to output pixels (pixel centres aligned)."""
    support, kernel = _kernel(interpolation)
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)  # widen the filter when shrinking (antialias)
    centres = (np.arange(out_size) + 0.5) * scale
    src = np.arange(in_size) + 0.5
    weights = kernel((src[None, :] - centres[:, None]) / filter_scale)
    # Only keep taps inside the (widened) support; normalise each row to sum to one.
    weights *= np.abs(src[None, :] - centres[:, None]) < support * filter_scale
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def resize_uint8(image: np.ndarray, height: int, width: int, interpolation: str = "bicubic") -> np.ndarray:
    """Resize an HxWxC uint8 image to height x width; returns float32 in [0, 255] (not rounded)."""
    if image.ndim != 3:
        raise ValueError(f"expected an HxWxC image, got shape {image.shape}")
    img = image.astype(np.float32)
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    rows = _resize_matrix(h, height, interpolation)
    cols = _resize_matrix(w, width, interpolation)
    out = np.einsum("oh,hwc->owc", rows, img, optimize=True)
    out = np.einsum("pw,owc->opc", cols, out, optimize=True)
    return np.clip(out, 0.0, 255.0)


def _fit(image: np.ndarray, spec: ImageSpec) -> np.ndarray:
    size = spec.size_px
    if spec.resize_mode == "squash":
        return resize_uint8(image, size, size, spec.interpolation)
    if spec.resize_mode == "shortest":
        h, w = image.shape[:2]
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        resized = resize_uint8(image, nh, nw, spec.interpolation)
        top, left = (nh - size) // 2, (nw - size) // 2
        return resized[top : top + size, left : left + size]
    raise ValueError(f"unknown resize_mode {spec.resize_mode!r}; expected 'squash' or 'shortest'")


def preprocess(images: np.ndarray | list[np.ndarray], spec: ImageSpec) -> np.ndarray:
    """uint8 images [N,H,W,3] (or a list of HxWx3 of any sizes) -> float32 NCHW [N,3,S,S] normalised.

    Each tile is written straight into the batch channels-first and the batch is normalised in
    place; a tile already at the model's size skips the resize (6.2 -> 0.5 ms per 224-px tile).
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[None]
    size = spec.size_px
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected uint8 HxWx3 images, got {image.dtype} {image.shape}")
        fitted = image if image.shape[:2] == (size, size) else _fit(image, spec)
        np.copyto(batch[i], fitted.transpose(2, 0, 1), casting="unsafe")  # uint8 or float32 -> float32
    batch -= (np.asarray(spec.mean, dtype=np.float32) * 255.0)[:, None, None]
    batch *= (1.0 / (np.asarray(spec.std, dtype=np.float32) * 255.0))[:, None, None]
    return batch
