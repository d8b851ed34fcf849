"""Convert, then verify: torch dual encoder -> a model directory the engine loads.

:func:`write_model_dir` exports both towers with ``torch.onnx.export`` (TorchScript exporter,
``dynamo=False``: it handles open_clip's attention and argmax pooling reliably; opset 17,
dynamic batch axis), copies the tokenizer vocabulary into ``vocab/``, checks ONNX Runtime
against torch (max abs difference of the normalised embeddings under ``tolerance``), writes
``manifest.json`` in the format of :mod:`rs_text_search.core.model` (sha256 of every file),
runs an optional extra check on the finished folder, and only then moves it into place: all
work happens in a temporary folder beside the target, published with ``os.replace``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rs_text_search.core.preprocess import ImageSpec

__all__ = ["ExportError", "ImageTower", "TextTower", "RotationAveraged", "export_towers", "onnx_parity",
           "write_model_dir"]  # fmt: skip

OPSET = 17
IMAGE_FILE = "image.onnx"
TEXT_FILE = "text.onnx"
PARITY_CAPTIONS = [
    "many planes are parked next to a long building in an airport",
    "a baseball field with green grass and a brown sandy infield",
    "dense residential area with houses and trees",
    "a river crosses the forest",
]


class ExportError(RuntimeError):
    """The exported model disagrees with the torch model or the engine (or cannot be written)."""


class ImageTower(nn.Module):
    """float32 [N,3,S,S] preprocessed pixels -> L2-normalised embeddings [N,D]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values, normalize=True)


class RotationAveraged(nn.Module):
    """A dual encoder whose image embedding is the mean over ``rotations`` quarter turns of the input.

    Nadir imagery has no "up", so averaging the embeddings of a tile's 90-degree rotations removes
    what the encoder still reads into orientation (test-time augmentation inside the exported graph:
    the engine needs no change, and pays ``rotations`` encoder passes per tile). Text is unchanged.
    """

    def __init__(self, model: nn.Module, rotations: int = 4) -> None:
        super().__init__()
        if rotations not in (1, 2, 4):
            raise ValueError(f"rotations must be 1, 2 or 4 quarter-turn views, not {rotations}")
        self.model = model
        self.rotations = rotations
        self.logit_scale = model.logit_scale

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = pixel_values
        # quarter turns as flips and transposes (ONNX has no rot90): 0, 90, 180, 270 degrees
        turns = [x, x.flip(3).transpose(2, 3), x.flip(2).flip(3), x.transpose(2, 3).flip(3)]
        views = torch.cat(turns[:: 4 // self.rotations])  # 2 views: 0 and 180 degrees
        features = self.model.encode_image(views, normalize=True)
        features = features.reshape(self.rotations, pixel_values.shape[0], -1).mean(dim=0)
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_text(self, input_ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.model.encode_text(input_ids, normalize=normalize)


class TextTower(nn.Module):
    """int64 token ids [N,L] -> L2-normalised embeddings [N,D] (padding handled inside the tower)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids, normalize=True)


def export_towers(model: nn.Module, directory: Path, image_size: int, token_ids: torch.Tensor) -> int:
    """Write ``image.onnx`` and ``text.onnx`` into ``directory``; returns the embedding dimension.

    The model is exported in eval mode, fp32, on the CPU.
    """
    model = model.float().cpu().eval()
    dummy_pixels = torch.zeros(2, 3, image_size, image_size)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's inference fast path is a fused op the ONNX exporter cannot convert.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            embed_dim = int(ImageTower(model)(dummy_pixels).shape[1])
            # The TorchScript exporter is deprecated in favour of dynamo and says so on every call.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                ImageTower(model), (dummy_pixels,), str(directory / IMAGE_FILE),
                input_names=["pixel_values"], output_names=["embeddings"],
                dynamic_axes={"pixel_values": {0: "batch"}, "embeddings": {0: "batch"}},
                opset_version=OPSET, dynamo=False,
            )  # fmt: skip
            torch.onnx.export(
                TextTower(model), (token_ids[:2].long(),), str(directory / TEXT_FILE),
                input_names=["input_ids"], output_names=["embeddings"],
                dynamic_axes={"input_ids": {0: "batch"}, "embeddings": {0: "batch"}},
                opset_version=OPSET, dynamo=False,
            )  # fmt: skip
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return embed_dim


def _run_onnx(path: Path, name: str, array: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: array})[0]


def onnx_parity(
    model: nn.Module, directory: Path, pixels: np.ndarray, token_ids: np.ndarray
) -> dict[str, float]:
    """Max abs difference between ONNX Runtime and torch embeddings, for images and for texts."""
    model = model.float().cpu().eval()
    with torch.no_grad():
        torch_image = ImageTower(model)(torch.from_numpy(pixels)).numpy()
        torch_text = TextTower(model)(torch.from_numpy(token_ids).long()).numpy()
    onnx_image = _run_onnx(directory / IMAGE_FILE, "pixel_values", pixels.astype(np.float32))
    onnx_text = _run_onnx(directory / TEXT_FILE, "input_ids", token_ids.astype(np.int64))
    return {
        "image_max_abs_diff": float(np.abs(onnx_image - torch_image).max()),
        "text_max_abs_diff": float(np.abs(onnx_text - torch_text).max()),
    }


def _sha256(path: Path) -> str:
    # Same digest as rs_text_search.core.model.file_sha256 (kept local: that module needs the tokenizer).
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _publish(staging: Path, target: Path, overwrite: bool) -> None:
    """Move the finished staging folder onto ``target`` (replacing an old one only with overwrite)."""
    if target.exists():
        if not overwrite:
            raise ExportError(f"'{target}' already exists; pass overwrite to replace it")
        retired = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


@contextmanager
def staged(target: Path, overwrite: bool) -> Iterator[Path]:
    """A staging folder path beside ``target`` (not made yet): moved onto ``target`` when the block ends
    (``_publish``), removed when it raises, so a model directory is never left half written."""
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
        _publish(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def model_dir_arguments(parser, model_help: str, data_help: str) -> None:
    """The arguments of a command that turns a model directory into another: --model, --data, --split,
    --out (which may be --model, with --overwrite), --overwrite."""
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--data", required=True, help=data_help)
    parser.add_argument("--split", default="val", help="split verified and scored (default: val)")
    parser.add_argument("--out", required=True, help="model directory to write (may be --model with --overwrite)")
    parser.add_argument("--overwrite", action="store_true")


def run_model_command(parser, argv: list[str] | None, build: Callable[[Any], dict]) -> tuple[Any, dict] | int:
    """``build(args)`` on ``parser``'s arguments from ``argv``: returns (args, the manifest it wrote), or the
    exit code after one sentence on stderr: 2 for bad input, 1 for a model that failed its own checks."""
    from .params import ParamsError

    try:
        args = parser.parse_args(argv)
        return args, build(args)
    except (ParamsError, OSError, ValueError) as exc:
        error, code = exc, 2
    except ExportError as exc:
        error, code = exc, 1
    print(f"error: {error}", file=sys.stderr)
    return code


def write_model_dir(
    model: nn.Module,
    target: Path,
    *,
    name: str,
    image_spec: ImageSpec,
    tokenizer_spec: dict[str, Any],
    vocab_file: Path,
    tokenize: Callable[[list[str]], torch.Tensor],
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    ground_m_per_px: float | None = None,
    parity_pixels: np.ndarray | None = None,
    parity_captions: list[str] | None = None,
    tolerance: float = 1e-4,
    overwrite: bool = False,
    post_process: Callable[[Path], dict[str, Any]] | None = None,
    check: Callable[[Path], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Export ``model`` to the model directory ``target`` and verify it; returns a report dict.

    ground_m_per_px: metres of ground per model input pixel in the training imagery (the manifest's
        ``ground_m_per_px``, which sets the engine's default tile size); None leaves it out.
    parity_pixels: preprocessed float32 [N,3,S,S] (default: 4 seeded random images).
    parity_captions: sentences for the text parity check (default: a few UCM-like captions).
    post_process(staging_dir): optional step after the parity check (quantisation) that may
        rewrite the ONNX files; its dict goes into the report and ``manifest['export']``.
    check(staging_dir): optional verification of the finished folder (the engine loading it);
        it raises :class:`ExportError` on disagreement and its dict goes into the report.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        raise ExportError(f"'{target}' already exists; pass overwrite to replace it")
    with staged(target, overwrite) as staging:
        (staging / "vocab").mkdir(parents=True)
        captions = parity_captions or PARITY_CAPTIONS
        token_ids = tokenize(list(captions))
        if parity_pixels is None:
            rng = np.random.default_rng(0)
            size = image_spec.size_px
            parity_pixels = rng.standard_normal((4, 3, size, size)).astype(np.float32)
        embed_dim = export_towers(model, staging, image_spec.size_px, token_ids)
        parity = onnx_parity(model, staging, parity_pixels, token_ids.numpy())
        worst = max(parity.values())
        if not worst < tolerance:
            raise ExportError(
                f"ONNX and torch embeddings differ by {worst:.2e} (tolerance {tolerance:.0e}): {parity}"
            )
        report: dict[str, Any] = {"parity": parity}
        if post_process is not None:
            report["post_process"] = post_process(staging)
        vocab_rel = f"vocab/{vocab_file.name}"
        shutil.copyfile(vocab_file, staging / vocab_rel)
        files = {rel: _sha256(staging / rel) for rel in (IMAGE_FILE, TEXT_FILE, vocab_rel)}
        manifest = {
            "schema_version": 1,
            "name": name,
            "embed_dim": embed_dim,
            "image": {"file": IMAGE_FILE, **image_spec.to_manifest()},
            "text": {
                "file": TEXT_FILE,
                "inputs": ["input_ids"],
                "tokenizer": {**tokenizer_spec, "vocab": vocab_rel},
            },
            "logit_scale": float(model.logit_scale.detach().exp().reshape(-1)[0]),
            **({"ground_m_per_px": round(float(ground_m_per_px), 6)} if ground_m_per_px else {}),
            "training": training or {},
            "metrics": metrics or {},
            "export": {"opset": OPSET, "parity": parity, **report.get("post_process", {})},
            "files": files,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if check is not None:
            report["check"] = check(staging)
    report["directory"] = str(target)
    report["manifest"] = manifest
    return report
