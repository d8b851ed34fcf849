"""``python -m training.evaluate``: the published image-text retrieval protocol on a caption split.

    python -m training.evaluate --model MODEL_DIR_OR_CHECKPOINT --data dataset.json --split val \
        [--rerank] [--json]

A model directory is evaluated through the engine (``rs_text_search.core.model.load_model``,
ONNX Runtime, the engine's preprocessing and tokenizer) exactly as the plugin uses it; a
training checkpoint (``.pt``) through torch with the same preprocessing
(:func:`rs_text_search.core.preprocess.preprocess`) and training's tokenizer. Both see the
images at full resolution as stored. ``--json`` prints one object with the keys of
:data:`training.metrics.METRIC_KEYS` (re-ranked numbers when ``--rerank`` is given).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rs_text_search.core.preprocess import ImageSpec, preprocess

from .data import ImageRecord, flat_captions, load_image, load_records, spread_subset
from .metrics import METRIC_KEYS, evaluate_scores
from .params import USER_ERRORS, ArgumentParser, ParamsError

__all__ = ["load_checkpoint", "embed_torch", "embed_engine", "evaluate", "main"]


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a training checkpoint (``torch.load(weights_only=True)``)."""
    from .models import build_model

    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"cannot read checkpoint '{path}': {exc}") from exc
    if not isinstance(checkpoint, dict) or "model_config" not in checkpoint or "model" not in checkpoint:
        raise ValueError(f"'{path}' is not a training.fit checkpoint (no model_config/model entries)")
    model = build_model(checkpoint["model_config"], load_pretrained_parts=False)
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint


def _pixels(records: list[ImageRecord]) -> list[np.ndarray]:
    return [r.pixels if r.pixels is not None else load_image(r.path) for r in records]


@torch.no_grad()
def embed_torch(
    model: torch.nn.Module,
    records: list[ImageRecord],
    image_spec: ImageSpec,
    tokenize,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    pixel_batches: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image [N, D] and caption [M, D] embeddings from a torch model.

    pixel_batches: already preprocessed float32 [N,3,S,S] (fit caches the validation images).
    """
    model.eval()
    if pixel_batches is None:
        pixel_batches = torch.from_numpy(preprocess(_pixels(records), image_spec))
    images = [
        model.encode_image(pixel_batches[i : i + batch_size].to(device), normalize=True).float().cpu()
        for i in range(0, len(pixel_batches), batch_size)
    ]
    captions, _ = flat_captions(records)
    tokens = tokenize(captions)
    texts = [
        model.encode_text(tokens[i : i + batch_size].to(device), normalize=True).float().cpu()
        for i in range(0, len(tokens), batch_size)
    ]
    return torch.cat(images).numpy(), torch.cat(texts).numpy()


def embed_engine(model_dir: Path, records: list[ImageRecord], provider: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Normalised image and caption embeddings through the engine, as the plugin computes them."""
    from rs_text_search.core.model import load_model

    engine = load_model(model_dir, provider=provider)
    images = engine.embed_images(_pixels(records))
    captions, _ = flat_captions(records)
    return images, engine.embed_texts(captions)


def evaluate(
    model: str | Path,
    data: str | Path,
    split: str,
    images_dir: str | Path | None = None,
    rerank: bool = False,
    rerank_top_k: int = 10,
    limit: int = 0,
    provider: str = "cpu",
) -> dict[str, Any]:
    """Metrics of ``model`` (model directory or checkpoint) on ``split``; adds ``rerank`` metrics if asked."""
    from .models import make_tokenizer

    path = Path(model)
    records = load_records(Path(data), split, Path(images_dir) if images_dir else None)
    records = spread_subset(records, limit)
    if path.is_dir() or path.suffix == ".json":
        image_emb, text_emb = embed_engine(path if path.is_dir() else path.parent, records, provider)
        source = "engine"
    elif path.is_file():
        torch_model, checkpoint = load_checkpoint(path)
        spec = ImageSpec.from_manifest(checkpoint["image"])
        image_emb, text_emb = embed_torch(torch_model, records, spec, make_tokenizer(checkpoint["tokenizer"]))
        source = "torch"
    else:
        raise ValueError(f"model '{model}' is neither a model directory nor a checkpoint file")
    _, caption_image = flat_captions(records)
    sim = image_emb @ text_emb.T
    result: dict[str, Any] = {"metrics": evaluate_scores(sim, caption_image), "source": source}
    if rerank:
        result["rerank"] = evaluate_scores(sim, caption_image, rerank=True, top_k=rerank_top_k)
    return result


def _table(metrics: dict[str, Any], title: str) -> str:
    keys = METRIC_KEYS[:7]
    head = " ".join(f"{k:>8}" for k in keys)
    row = " ".join(f"{metrics[k]:8.2f}" for k in keys)
    return f"{title} ({metrics['n_images']} images, {metrics['n_captions']} captions)\n{head}\n{row}"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="exported model directory or training checkpoint (.pt)")
    parser.add_argument("--data", required=True, help="Karpathy-style caption JSON or filepath,caption CSV")
    parser.add_argument("--split", default="val", help="split to evaluate (the published protocol uses test)")
    parser.add_argument("--images", help="image folder (default: images/ beside the JSON)")
    parser.add_argument("--rerank", action="store_true", help="also report rank-fusion re-ranking")
    parser.add_argument("--rerank-top-k", type=int, default=10)
    parser.add_argument("--limit", type=int, default=0, help="evaluate N images spread over the split (0: all)")
    parser.add_argument("--provider", choices=["auto", "cuda", "cpu"], default="cpu", help="for model directories")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    try:
        args = parser.parse_args(argv)
        if not Path(args.model).exists():
            raise ParamsError(f"model '{args.model}' does not exist")
        if args.rerank_top_k < 1 or args.limit < 0:
            raise ParamsError("--rerank-top-k must be at least 1 and --limit zero or positive")
        result = evaluate(args.model, args.data, args.split, args.images, args.rerank, args.rerank_top_k,
                          args.limit, args.provider)  # fmt: skip
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result["rerank"] if args.rerank else result["metrics"]))
    else:
        print(_table(result["metrics"], f"{args.model} on {args.split} via {result['source']}"))
        if args.rerank:
            print(_table(result["rerank"], f"with re-ranking (top {args.rerank_top_k})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
