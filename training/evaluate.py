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
from .folder_data import class_embeddings, load_class_folder, zero_shot_scores
from .metrics import METRIC_KEYS, evaluate_scores
from .params import USER_ERRORS, ArgumentParser, ParamsError
from .tags import load_tags, tag_precision

__all__ = ["load_checkpoint", "embed_unique", "embed_torch", "embed_engine", "retrieval_scores", "folder_zero_shot",
           "evaluate", "main"]  # fmt: skip


def embed_unique(embed_texts, captions: list[str]) -> np.ndarray:
    """``embed_texts`` applied to each distinct caption once, rows expanded back to ``captions``' order.

    UCM repeats captions verbatim across images; embedding each string once keeps such repeats
    exact ties however the captions would otherwise be batched (batching changed the last bits
    and mR by up to 0.5).
    """
    distinct, inverse = np.unique(np.asarray(captions, dtype=object), return_inverse=True)
    return np.asarray(embed_texts([str(c) for c in distinct]))[inverse.reshape(-1)]


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
def embed_pixels_torch(model: torch.nn.Module, pixels: torch.Tensor, device="cpu", batch_size: int = 64) -> np.ndarray:
    """Normalised image embeddings [N, D] of preprocessed float32 pixels [N,3,S,S]."""
    model.eval()
    parts = [model.encode_image(pixels[i : i + batch_size].to(device), normalize=True).float().cpu()
             for i in range(0, len(pixels), batch_size)]  # fmt: skip
    return torch.cat(parts).numpy()


def torch_text_embedder(model: torch.nn.Module, tokenize, device="cpu", batch_size: int = 64):
    """``embed(texts) -> [M, D]`` normalised caption embeddings from a torch model."""

    @torch.no_grad()
    def embed(texts: list[str]) -> np.ndarray:
        model.eval()
        tokens = tokenize(texts)
        parts = [model.encode_text(tokens[i : i + batch_size].to(device), normalize=True).float().cpu()
                 for i in range(0, len(tokens), batch_size)]  # fmt: skip
        return torch.cat(parts).numpy()

    return embed


def embed_torch(
    model: torch.nn.Module,
    records: list[ImageRecord],
    image_spec: ImageSpec,
    tokenize,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image [N, D] and caption [M, D] embeddings from a torch model."""
    pixels = torch.from_numpy(preprocess(_pixels(records), image_spec))
    captions, _ = flat_captions(records)
    text_embedder = torch_text_embedder(model, tokenize, device, batch_size)
    return embed_pixels_torch(model, pixels, device, batch_size), embed_unique(text_embedder, captions)


def embed_engine(model_dir: Path, records: list[ImageRecord], provider: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Normalised image and caption embeddings through the engine, as the plugin computes them."""
    images, texts, _ = _embedders(Path(model_dir), provider)
    captions, _ = flat_captions(records)
    return images(_pixels(records)), embed_unique(texts, captions)


def _embedders(model: Path, provider: str):
    """(embed_images(list of uint8 HxWx3) -> [N, D], embed_texts(list[str]) -> [M, D], source name)."""
    from .models import make_tokenizer

    if model.is_dir() or model.suffix == ".json":
        from rs_text_search.core.model import load_model

        engine = load_model(model if model.is_dir() else model.parent, provider=provider)
        return engine.embed_images, engine.embed_texts, "engine"
    if model.is_file():
        torch_model, checkpoint = load_checkpoint(model)
        spec = ImageSpec.from_manifest(checkpoint["image"])

        def images(pixels: list[np.ndarray]) -> np.ndarray:
            return embed_pixels_torch(torch_model, torch.from_numpy(preprocess(pixels, spec)))

        return images, torch_text_embedder(torch_model, make_tokenizer(checkpoint["tokenizer"])), "torch"
    raise ValueError(f"model '{model}' is neither a model directory nor a checkpoint file")


# test-time views of a nadir image: k quarter turns, optionally after a left-right flip
TTA_VIEWS = {
    "none": [(0, False)],
    "rot4": [(k, False) for k in range(4)],
    "d8": [(k, flip) for k in range(4) for flip in (False, True)],
}


def view_of(pixels: np.ndarray, quarter_turns: int, flip: bool) -> np.ndarray:
    """One test-time view of an HxWx3 image: ``quarter_turns`` after an optional left-right flip."""
    return np.ascontiguousarray(np.rot90(pixels[:, ::-1] if flip else pixels, quarter_turns))


def with_views(embed_images, tta: str):
    """``embed_images`` averaged over the :data:`TTA_VIEWS` of ``tta`` and normalised again."""
    views = TTA_VIEWS[tta]
    if len(views) == 1:
        return embed_images

    def embed(pixels: list[np.ndarray]) -> np.ndarray:
        total = sum(embed_images([view_of(p, k, flip) for p in pixels]) for k, flip in views)
        return total / np.linalg.norm(total, axis=1, keepdims=True)

    return embed


def retrieval_scores(image_emb: np.ndarray, records: list[ImageRecord], embed_texts, rerank: bool = False,
                     rerank_top_k: int = 10) -> tuple[dict[str, Any], dict[str, Any] | None]:  # fmt: skip
    """Published metrics of image embeddings against ``records``' captions (each distinct one embedded
    once), and the re-ranked ones when ``rerank`` (else None)."""
    captions, caption_image = flat_captions(records)
    sim = image_emb @ embed_unique(embed_texts, captions).T
    reranked = evaluate_scores(sim, caption_image, rerank=True, top_k=rerank_top_k) if rerank else None
    return evaluate_scores(sim, caption_image), reranked


def folder_zero_shot(folder_emb: np.ndarray, records: list[ImageRecord], classes: list[str], embed_texts) -> dict:
    """Zero-shot top-1/top-5 of a class folder's held-out images (labels index ``classes``)."""
    labels = np.array([r.label for r in records])
    return zero_shot_scores(folder_emb, labels, class_embeddings(embed_texts, classes))


def _centre_crop(pixels: np.ndarray, fraction: float) -> np.ndarray:
    height, width = pixels.shape[:2]
    h, w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - h) // 2, (width - w) // 2
    return pixels[top : top + h, left : left + w]


def evaluate(
    model: str | Path,
    data: str | Path | None,
    split: str,
    images_dir: str | Path | None = None,
    rerank: bool = False,
    rerank_top_k: int = 10,
    limit: int = 0,
    provider: str = "cpu",
    tags: str | Path | None = None,
    zero_shot: str | Path | None = None,
    holdout: int = 20,
    tta: str = "none",
    zero_shot_crop: float = 1.0,
) -> dict[str, Any]:
    """Metrics of ``model`` (model directory or checkpoint).

    ``data``: retrieval on ``split`` (``metrics``; ``rerank`` too if asked; ``tags``: the tag
    query figure on the same images). ``zero_shot``: a class folder whose held-out ``val``
    images (``holdout`` per class, as fit holds them out) are classified with the templates.
    ``tta``: average each image's embedding over rotations (``rot4``) or rotations and flips (``d8``).
    ``zero_shot_crop``: classify the centre ``crop`` of each held-out image's side instead (a tile
    smaller than the scene, as the engine's default tile is on coarse scene imagery).
    """
    embed_images, embed_texts, source = _embedders(Path(model), provider)
    embed_images = with_views(embed_images, tta)
    result: dict[str, Any] = {"source": source}
    if data is not None:
        records = spread_subset(load_records(Path(data), split, Path(images_dir) if images_dir else None), limit)
        image_emb = embed_images(_pixels(records))
        result["metrics"], reranked = retrieval_scores(image_emb, records, embed_texts, rerank, rerank_top_k)
        if rerank:
            result["rerank"] = reranked
        if tags is not None:
            result["tags"] = tag_precision(image_emb, records, load_tags(tags), embed_texts)
    if zero_shot is not None:
        folder_val, classes = load_class_folder(zero_shot, "val", holdout)
        folder_val = spread_subset(folder_val, limit)
        pixels = [_centre_crop(p, zero_shot_crop) for p in _pixels(folder_val)]
        result["zero_shot"] = folder_zero_shot(embed_images(pixels), folder_val, classes, embed_texts)
    return result


def _table(metrics: dict[str, Any], title: str) -> str:
    keys = METRIC_KEYS[:7]
    head = " ".join(f"{k:>8}" for k in keys)
    row = " ".join(f"{metrics[k]:8.2f}" for k in keys)
    return f"{title} ({metrics['n_images']} images, {metrics['n_captions']} captions)\n{head}\n{row}"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="exported model directory or training checkpoint (.pt)")
    parser.add_argument("--data", help="Karpathy-style caption JSON or filepath,caption CSV (retrieval)")
    parser.add_argument("--split", default="val", help="split to evaluate (the published protocol uses test)")
    parser.add_argument("--images", help="image folder (default: images/ beside the JSON)")
    parser.add_argument("--rerank", action="store_true", help="also report rank-fusion re-ranking")
    parser.add_argument("--rerank-top-k", type=int, default=10)
    parser.add_argument("--tags", help="UCM multilabels.tsv: also report the object-tag precision@10")
    parser.add_argument("--zero-shot", help="class folder (e.g. AID): zero-shot top-1/top-5 on its held-out images")
    parser.add_argument("--holdout", type=int, default=20, help="held-out images per class, as in training.fit")
    parser.add_argument("--zero-shot-crop", type=float, default=1.0,
                        help="classify the centre fraction of each image's side (1: the whole image)")
    parser.add_argument("--limit", type=int, default=0, help="evaluate N images spread over the split (0: all)")
    parser.add_argument("--tta", choices=list(TTA_VIEWS), default="none",
                        help="average image embeddings over 4 rotations or the 8 rotations and flips")
    parser.add_argument("--provider", choices=["auto", "cuda", "cpu"], default="cpu", help="for model directories")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    try:
        args = parser.parse_args(argv)
        if not Path(args.model).exists():
            raise ParamsError(f"model '{args.model}' does not exist")
        if args.data is None and args.zero_shot is None:
            raise ParamsError("give --data (retrieval), --zero-shot FOLDER, or both")
        if args.tags is not None and args.data is None:
            raise ParamsError("--tags needs --data (the tag figure ranks the caption split's images)")
        if not 0 < args.zero_shot_crop <= 1:
            raise ParamsError("--zero-shot-crop must be a fraction in (0, 1]")
        if args.rerank_top_k < 1 or args.limit < 0 or args.holdout < 1:
            raise ParamsError("--rerank-top-k and --holdout must be at least 1 and --limit zero or positive")
        result = evaluate(args.model, args.data, args.split, args.images, args.rerank, args.rerank_top_k,
                          args.limit, args.provider, args.tags, args.zero_shot, args.holdout, args.tta,
                          args.zero_shot_crop)  # fmt: skip
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        shown = dict(result["rerank"] if args.rerank else result.get("metrics", {}))
        if "tags" in result:
            shown.update(result["tags"])
        if "zero_shot" in result:
            shown.update({f"zs_{k}": v for k, v in result["zero_shot"].items()})
        print(json.dumps(shown))
        return 0
    if "metrics" in result:
        print(_table(result["metrics"], f"{args.model} on {args.split} via {result['source']}"))
    if args.rerank:
        print(_table(result["rerank"], f"with re-ranking (top {args.rerank_top_k})"))
    if "tags" in result:
        per_tag = ", ".join(f"{k.split('/')[1]} {v:.1f}" for k, v in result["tags"].items() if "/" in k)
        print(f"object-tag precision@10: {result['tags'].get('tag_p10', 0.0):.3f} ({per_tag})")
    if "zero_shot" in result:
        zs = result["zero_shot"]
        print(f"zero-shot on {args.zero_shot} ({zs['n_images']} held-out images, {zs['n_classes']} classes): "
              f"top-1 {zs['top1']:.3f}, top-5 {zs['top5']:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
