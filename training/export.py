"""``python -m training.export``: a training checkpoint -> a verified model directory for the engine.

    python -m training.export --checkpoint runs/ucm/best.pt --out resources/models/NAME \
        [--name NAME] [--quantize int8|fp16 [--quantize-towers both|image|text]] [--data dataset.json --split val]

Convert, then verify, on real images and captions of ``--data``/``--split`` (default: the
checkpoint's own training file and its validation split):

1. ONNX Runtime vs torch, normalised embeddings, max abs difference < ``--tolerance`` (1e-4);
2. the engine (``rs_text_search.core.model.load_model`` on the finished folder) reads the same
   image spec as training, its tokenizer gives exactly training's token ids on every caption of
   the split, and its embeddings of the raw uint8 images and caption strings match torch's;
3. with ``--quantize``, the fp32 checks run first, then the towers are quantised and the change
   in retrieval (mR on the split, engine vs torch fp32) and the worst cosine are reported.

Any disagreement fails loudly (exit 1) and leaves no model directory behind; bad input exits 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rs_text_search.core.preprocess import ImageSpec, preprocess

from .data import dataset_ground_m, flat_captions, load_image, load_records
from .evaluate import embed_torch, embed_unique, load_checkpoint
from .metrics import evaluate_scores
from .models import make_tokenizer, vocab_source
from .onnx_export import IMAGE_FILE, TEXT_FILE, ExportError, RotationAveraged, write_model_dir
from .params import ArgumentParser, ParamsError
from .quantize import quantize_int8

__all__ = ["quantize_dir", "export_checkpoint", "main"]

QUANT_MIN_COSINE = 0.95  # a quantised tower whose worst embedding drifts further is broken, not lossy


def quantize_dir(directory: Path, mode: str, towers: str = "both") -> dict[str, Any]:
    """Rewrite image.onnx and/or text.onnx (``towers``: both, image, text) in place as ``int8``
    (MatMul and Gather weights; weight-only, see ``training.quantize``) or ``fp16`` (fp32 I/O)."""
    import onnx

    sizes = {}
    names = {"both": (IMAGE_FILE, TEXT_FILE), "image": (IMAGE_FILE,), "text": (TEXT_FILE,)}.get(towers)
    if names is None:
        raise ValueError(f"unknown towers '{towers}'; expected both, image or text")
    for name in names:
        path = directory / name
        before = path.stat().st_size
        if mode == "int8":
            quantize_int8(path)  # int8 weights, float activations: batch-invariant (training/quantize.py)
        elif mode == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(path))
        else:
            raise ValueError(f"unknown quantisation '{mode}'; expected int8 or fp16")
        sizes[name] = {"bytes_fp32": before, "bytes": path.stat().st_size}
    return {"quantize": mode, "quantized_towers": towers, "sizes": sizes}


def _verification_records(data: Path, split: str, images_dir: Path | None):
    records = load_records(data, split, images_dir)
    for record in records:
        record.pixels = load_image(record.path)
    return records


def _input_ground_m(image_ground_m: float | None, records, spec: ImageSpec) -> float | None:
    """Metres per model input pixel: the images' metres per pixel times their (median) side over the input size."""
    if not image_ground_m:
        return None
    side = float(np.median([min(r.pixels.shape[:2]) for r in records]))
    return image_ground_m * side / spec.size_px


def export_checkpoint(
    checkpoint_path: Path,
    out: Path,
    name: str | None = None,
    data: Path | None = None,
    split: str = "val",
    images_dir: Path | None = None,
    parity_images: int = 16,
    quantize: str | None = None,
    tolerance: float = 1e-4,
    overwrite: bool = False,
    command: str | None = None,
    quantize_towers: str = "both",
    image_ground_m: float | None = None,
    rotations: int = 1,
) -> dict[str, Any]:
    """Export and verify; returns the report. Raises ExportError on disagreement, ValueError on bad input.

    rotations: 2 or 4 bakes test-time rotation averaging into ``image.onnx`` (:class:`RotationAveraged`);
    every check then runs on the averaged model, and indexing costs that many encoder passes per tile.

    image_ground_m: metres per pixel of the training images (default: known for UCM- and Sydney-Captions,
    ``training.data.GROUND_M_PER_PX``); the manifest records it per model input pixel.
    """
    model, checkpoint = load_checkpoint(checkpoint_path)
    if rotations > 1:
        model = RotationAveraged(model, rotations).eval()
    spec = ImageSpec.from_manifest(checkpoint["image"])
    tokenizer_spec = dict(checkpoint["tokenizer"])
    tokenize = make_tokenizer(tokenizer_spec)
    data = Path(data or checkpoint.get("data", {}).get("file", ""))
    if not data.is_file():
        raise ValueError(f"verification needs real captions: '{data}' does not exist (pass --data)")
    records = _verification_records(data, split, images_dir)
    trained_on = Path(checkpoint.get("data", {}).get("file") or data)
    ground_m_per_px = _input_ground_m(image_ground_m or dataset_ground_m(trained_on), records, spec)
    captions, caption_image = flat_captions(records)
    picks = np.linspace(0, len(records) - 1, min(parity_images, len(records))).round().astype(int)
    parity_raw = [records[i].pixels for i in picks]
    parity_captions = [c for i in picks for c in records[i].captions]
    torch_images, torch_texts = embed_torch(model, records, spec, tokenize)
    torch_metrics = evaluate_scores(torch_images @ torch_texts.T, caption_image)

    def check(staging: Path) -> dict[str, Any]:
        return _engine_check(staging, spec, tokenize, records, captions, caption_image,
                             torch_images, torch_texts, torch_metrics, quantize, tolerance)  # fmt: skip

    metrics = {"val": checkpoint.get("metrics", {}), "val_rerank": checkpoint.get("rerank_metrics", {}),
               f"{split}_torch_fp32": torch_metrics}  # fmt: skip
    if checkpoint.get("extra_metrics"):  # tag precision@10 and zero-shot accuracy of the selected epoch
        metrics["val_extra"] = dict(checkpoint["extra_metrics"], selected_by=checkpoint.get("selected_by", "mR"))
    training = {
        "checkpoint": str(checkpoint_path), "epoch": checkpoint.get("epoch"), "step": checkpoint.get("step"),
        "data": checkpoint.get("data", {}), "params": checkpoint.get("params", {}),
        "fit_command": checkpoint.get("command"),
        "model_config": checkpoint["model_config"], "export_command": command,
        "test_time_rotations": rotations,
    }  # fmt: skip
    report = write_model_dir(
        model, Path(out), name=name or Path(out).name, image_spec=spec, tokenizer_spec=tokenizer_spec,
        vocab_file=vocab_source(tokenizer_spec["kind"]), tokenize=tokenize, training=training, metrics=metrics,
        ground_m_per_px=ground_m_per_px,
        parity_pixels=preprocess(parity_raw, spec), parity_captions=parity_captions, tolerance=tolerance,
        overwrite=overwrite, post_process=(lambda d: quantize_dir(d, quantize, quantize_towers)) if quantize else None,
        check=check,
    )  # fmt: skip
    report["torch_metrics"] = torch_metrics
    return report


def _engine_check(staging, spec, tokenize, records, captions, caption_image, torch_images, torch_texts,
                  torch_metrics, quantize, tolerance) -> dict[str, Any]:  # fmt: skip
    """The engine's view of the finished folder must match training's (see the module docstring)."""
    from rs_text_search.core.errors import RsTextSearchError
    from rs_text_search.core.model import load_model

    try:
        engine = load_model(staging, provider="cpu")
    except RsTextSearchError as exc:
        raise ExportError(f"the engine cannot load the exported folder: {exc}") from exc
    if engine.image_spec != spec:
        raise ExportError(f"the engine reads image spec {engine.image_spec}, training used {spec}")
    engine_ids = engine.tokenize(captions)["input_ids"]
    training_ids = tokenize(captions).numpy()
    if engine_ids.shape != training_ids.shape or not np.array_equal(engine_ids, training_ids):
        bad = [c for c, a, b in zip(captions, engine_ids, training_ids, strict=True) if not np.array_equal(a, b)]
        raise ExportError(f"the engine tokenizer differs from training's on {len(bad)} captions, e.g. {bad[:2]}")
    pixels = [r.pixels for r in records]
    if not np.array_equal(engine.preprocess(pixels[:8]), preprocess(pixels[:8], spec)):
        raise ExportError("the engine's preprocessing differs from training's")
    engine_images = engine.embed_images(pixels)
    engine_texts = embed_unique(engine.embed_texts, captions)  # as torch's: repeated captions stay exact ties
    engine_metrics = evaluate_scores(engine_images @ engine_texts.T, caption_image)
    diff = max(float(np.abs(engine_images - torch_images).max()), float(np.abs(engine_texts - torch_texts).max()))
    cosine = min(float((engine_images * torch_images).sum(1).min()), float((engine_texts * torch_texts).sum(1).min()))
    result = {"engine_max_abs_diff": diff, "engine_min_cosine": cosine, "engine_metrics": engine_metrics,
              "mR_change": engine_metrics["mR"] - torch_metrics["mR"], "tokenizer_ids_equal": len(captions)}
    if quantize is None and not diff < tolerance:
        raise ExportError(f"engine and torch embeddings differ by {diff:.2e} (tolerance {tolerance:.0e})")
    if quantize is not None and cosine < QUANT_MIN_COSINE:
        raise ExportError(f"the {quantize} model drifts too far from torch (worst cosine {cosine:.3f})")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m training.export", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="training checkpoint, e.g. RUN/best.pt")
    parser.add_argument("--out", required=True, help="model directory to write, e.g. resources/models/NAME")
    parser.add_argument("--name", help="model name in the manifest (default: the folder name)")
    parser.add_argument("--quantize", choices=["int8", "fp16"], help="quantise after verification")
    parser.add_argument("--quantize-towers", choices=["both", "image", "text"], default="both",
                        help="which tower(s) --quantize rewrites")
    parser.add_argument("--data", help="captions for verification (default: the checkpoint's training file)")
    parser.add_argument("--split", default="val", help="split of --data used for verification")
    parser.add_argument("--images", help="image folder (default: images/ beside the JSON)")
    parser.add_argument("--parity-images", type=int, default=16, help="images in the ONNX vs torch check")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs embedding difference")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    parser.add_argument("--image-ground-m", type=float, default=None,
                        help="metres per pixel of the training images, recorded in the manifest to set the "
                             "engine's default tile size (default: known for UCM- and Sydney-Captions)")
    parser.add_argument("--rotations", type=int, choices=[1, 2, 4], default=1,
                        help="average each tile's embedding over this many quarter-turn views inside image.onnx "
                             "(better retrieval, that many encoder passes per tile)")
    try:
        args = parser.parse_args(argv)
        if not Path(args.checkpoint).is_file():
            raise ParamsError(f"checkpoint '{args.checkpoint}' does not exist")
        if args.parity_images < 1 or args.tolerance <= 0:
            raise ParamsError("--parity-images must be at least 1 and --tolerance positive")
        if args.image_ground_m is not None and args.image_ground_m <= 0:
            raise ParamsError("--image-ground-m must be a positive number of metres")
        command = "python -m training.export " + " ".join(argv if argv is not None else sys.argv[1:])
        report = export_checkpoint(
            Path(args.checkpoint), Path(args.out), args.name, Path(args.data) if args.data else None,
            args.split, Path(args.images) if args.images else None, args.parity_images, args.quantize,
            args.tolerance, args.overwrite, command, args.quantize_towers, args.image_ground_m, args.rotations,
        )  # fmt: skip
    except ExportError as exc:
        print(f"error: export verification failed: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    check = report["check"]
    if "ground_m_per_px" not in report["manifest"]:
        print("note: the training images' ground resolution is unknown, so the engine will tile at the model's "
              "input size; pass --image-ground-m to record it", file=sys.stderr)
    print(json.dumps({"directory": report["directory"], "parity": report["parity"],
                      "ground_m_per_px": report["manifest"].get("ground_m_per_px"),
                      "engine_max_abs_diff": check["engine_max_abs_diff"], "mR_torch": report["torch_metrics"]["mR"],
                      "mR_engine": check["engine_metrics"]["mR"], "mR_change": check["mR_change"],
                      **report.get("post_process", {})}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
