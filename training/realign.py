"""``python -m training.realign``: fit a model's text side to its own image tower, which stays as it is.

    python -m training.realign --model resources/models/rs-default --data dataset.json \
        --out resources/models/rs-default --overwrite [--views d8 --epochs 40]

LiT turned around: the image tower is locked (its embeddings are what the indexes hold), and the text
side learns one linear map ``W e + b`` on top of the model's own normalised text embedding ``e``,
followed by a renormalisation; the map is appended to text.onnx (MatMul, Add, LpNormalization), so
nothing changes in the engine and a query costs one 384 x 384 product more. It is trained with the
symmetric InfoNCE loss between the engine's embeddings of the training images, each seen in the
``--views`` (quarter turns and flips: a nadir image has no up) and computed once, and the distinct
training captions; a batch holds distinct images, one caption and one view of each. The map starts
at the identity, the temperature at the model's logit scale; one-cycle AdamW schedule, a fixed number
of epochs (no selection on the split it is scored on).

Why it helps: an ensemble's text side is its members' text projections, each trained against its own
image tower, then concatenated and projected (``training.ensemble``): nothing ever fitted that text
side to the ensemble's image embeddings. On the bundled model it adds 2.8 mR on UCM-Captions val (2.0
re-ranked; training/README.md), and indexing speed is untouched. An image-side map as well, or a
small MLP instead of the linear map, did worse on val (overfitting 1,680 images). The image tower's
bytes are unchanged, but the model's identity covers text.onnx, so indexes made with the model before
are made again. A model already re-aligned is refused: re-align the model it was made from.

Verified before the folder is published: the engine loads it, its image embeddings are the base model's
bit for bit, and its text embeddings are the map applied to the base model's. The base and the new
retrieval metrics on ``--split`` go into the manifest. Bad input exits 2 with one sentence.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .ensemble import _unit, _write_manifest
from .onnx_export import TEXT_FILE, ExportError, _sha256, model_dir_arguments, run_model_command, staged
from .params import ArgumentParser, ParamsError

__all__ = ["fit_text_map", "append_text_map", "realign", "main"]

PARITY_TOLERANCE = 1e-4


def _view_embeddings(engine, pixels: list[np.ndarray], views: str, progress: bool) -> np.ndarray:
    """[views, N, D] engine image embeddings of ``pixels`` under the test-time views of ``views``."""
    from tqdm import tqdm

    from .evaluate import TTA_VIEWS, view_of

    out = []
    for k, flip in tqdm(TTA_VIEWS[views], desc=f"training images, {views} views", disable=not progress):
        out.append(engine.embed_images([view_of(p, k, flip) for p in pixels]))
    return np.stack(out).astype(np.float32)


def fit_text_map(images: np.ndarray, texts: np.ndarray, caption_text: np.ndarray, caption_image: np.ndarray,
                 *, logit_scale: float, epochs: int, lr: float, batch_size: int, weight_decay: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(W [D, D], b [D], mean loss per epoch): ``normalise(W e + b)`` for text embeddings ``e``, trained against
    the fixed ``images`` [views, N, D]. ``texts`` [U, D]: the distinct captions' embeddings; ``caption_text`` and
    ``caption_image`` [M]: each caption's row in ``texts`` and its image."""
    import torch
    import torch.nn.functional as F  # noqa: N812 - torch's own convention

    from .losses import positives_cross_entropy

    generator = torch.Generator().manual_seed(seed)
    views, n_images, dim = images.shape
    image_t, text_t = torch.from_numpy(images), torch.from_numpy(np.ascontiguousarray(texts, dtype=np.float32))
    captions_of = [torch.from_numpy(np.flatnonzero(caption_image == i)) for i in range(n_images)]
    if any(len(c) == 0 for c in captions_of):
        raise ParamsError("every training image needs at least one caption")
    caption_text_t = torch.from_numpy(np.asarray(caption_text, dtype=np.int64))
    # has[i, u]: image i has distinct caption u. UCM repeats captions verbatim across the images of a class
    # ("there are many buildings"): in a batch, such a caption is a positive for every image that has it,
    # not a negative for all but one.
    has = torch.zeros(n_images, len(texts), dtype=torch.bool)
    has[torch.from_numpy(np.asarray(caption_image, dtype=np.int64)), caption_text_t] = True
    head = torch.nn.Linear(dim, dim)
    with torch.no_grad():
        head.weight.copy_(torch.eye(dim))
        head.bias.zero_()
    log_scale = torch.nn.Parameter(torch.tensor(math.log(logit_scale), dtype=torch.float32))
    optimiser = torch.optim.AdamW([*head.parameters(), log_scale], lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-n_images // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                   pct_start=0.1)
    losses = []
    for _ in range(epochs):
        order, total = torch.randperm(n_images, generator=generator), 0.0
        for start in range(0, n_images, batch_size):
            ids = order[start : start + batch_size]
            picks = torch.cat([captions_of[i][torch.randint(len(captions_of[i]), (1,), generator=generator)]
                               for i in ids.tolist()])
            caption = caption_text_t[picks]
            view = torch.randint(views, (len(ids),), generator=generator)
            logits = log_scale.exp() * image_t[view, ids] @ F.normalize(head(text_t[caption]), dim=1).T
            loss = positives_cross_entropy(logits, has[ids][:, caption].float())  # the diagonal is always set
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(ids)
        losses.append(total / n_images)
    return head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy(), losses


def append_text_map(source: Path, target: Path, weight: np.ndarray, bias: np.ndarray) -> None:
    """Write ``source`` (a text.onnx ending in normalised embeddings) to ``target`` ending in
    ``normalise(W e + b)`` instead."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    (output,) = graph.output
    base = output.name + "_base"
    for node in graph.node:  # the old output becomes an inner value
        node.output[:] = [base if name == output.name else name for name in node.output]
    graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(weight.T, dtype=np.float32), "text_map_w"),
                              numpy_helper.from_array(bias.astype(np.float32), "text_map_b")])
    graph.node.extend([helper.make_node("MatMul", [base, "text_map_w"], ["text_mapped"]),
                       helper.make_node("Add", ["text_mapped", "text_map_b"], ["text_shifted"]),
                       helper.make_node("LpNormalization", ["text_shifted"], [output.name], axis=1, p=2)])
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def realign(model_dir: Path, data: Path, out: Path, *, split: str = "val", views: str = "d8", epochs: int = 40,
            lr: float = 1e-3, batch_size: int = 128, weight_decay: float = 0.01, seed: int = 0,
            overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write the model directory ``out``: ``model_dir`` with its text side fitted to its image tower on ``data``'s
    train split (atomically, verified); returns its manifest."""
    from rs_text_search.core.errors import ModelError
    from rs_text_search.core.model import load_model

    from .data import flat_captions, load_records
    from .evaluate import TTA_VIEWS, _pixels, retrieval_scores

    model_dir, out = Path(model_dir), Path(out)
    if views not in TTA_VIEWS:
        raise ParamsError(f"--views must be one of {', '.join(TTA_VIEWS)}, not '{views}'.")
    if epochs < 1 or batch_size < 2 or lr <= 0:
        raise ParamsError("--epochs must be at least 1, --batch-size at least 2 and --lr positive.")
    if not (model_dir / "manifest.json").is_file():
        raise ParamsError(f"'{model_dir}' is not a model directory (it has no manifest.json).")
    if out.exists() and not overwrite:
        raise ParamsError(f"'{out}' already exists; pass --overwrite to replace it.")
    manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    earlier = manifest.get("training", {}).get("realign")
    if earlier:
        raise ParamsError(f"'{model_dir}' is already re-aligned; re-align the model it was made from "
                          f"('{earlier['base']['directory']}') instead.")
    try:
        base = load_model(model_dir, provider="cpu")
    except ModelError as exc:
        raise ParamsError(str(exc)) from None
    train, held_out = load_records(Path(data), "train", None), load_records(Path(data), split, None)
    if not train or not held_out:
        raise ParamsError(f"'{data}' has no images in its train or {split} split.")
    captions, caption_image = flat_captions(train)
    distinct, caption_text = np.unique(np.asarray(captions, dtype=object), return_inverse=True)
    images = _view_embeddings(base, _pixels(train), views, progress)
    texts = base.embed_texts([str(c) for c in distinct])
    weight, bias, losses = fit_text_map(images, texts, caption_text.reshape(-1), caption_image,
                                        logit_scale=float(base.manifest.get("logit_scale") or 20.0), epochs=epochs,
                                        lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed)
    with staged(out, overwrite) as staging:
        shutil.copytree(model_dir, staging)
        append_text_map(model_dir / TEXT_FILE, staging / TEXT_FILE, weight, bias)
        manifest["files"][TEXT_FILE] = _sha256(staging / TEXT_FILE)
        _write_manifest(staging, manifest)  # the engine checks the new text.onnx against it
        aligned = load_model(staging, provider="cpu")
        held_pixels = _pixels(held_out)
        probe = [c for r in held_out for c in r.captions][:64]
        text_diff = float(np.abs(aligned.embed_texts(probe) - _unit(base.embed_texts(probe) @ weight.T + bias)).max())
        image_same = bool(np.array_equal(aligned.embed_images(held_pixels[:8]), base.embed_images(held_pixels[:8])))
        if text_diff > PARITY_TOLERANCE or not image_same:
            raise ExportError(f"the re-aligned model disagrees with its base: text max abs difference {text_diff:.2e}, "
                              f"image embeddings {'equal' if image_same else 'changed'}")
        held_images = base.embed_images(held_pixels)
        before = retrieval_scores(held_images, held_out, base.embed_texts, rerank=True)
        after = retrieval_scores(held_images, held_out, aligned.embed_texts, rerank=True)
        manifest["training"] = {**manifest.get("training", {}), "realign": {
            "base": {"directory": str(model_dir), "name": manifest.get("name"), "sha256": base.sha256,
                     "metrics": {"split": split, **before[0], "rerank": before[1]}},
            "data": str(data), "views": views, "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "weight_decay": weight_decay, "seed": seed, "n_images": len(train), "n_captions": len(captions),
            "n_distinct_captions": len(distinct), "loss_per_epoch": [round(v, 4) for v in losses]}}
        manifest["metrics"] = {"split": split, "data": str(data), **after[0], "rerank": after[1]}
        manifest.setdefault("export", {})["realign"] = {"text_max_abs_diff": text_diff, "image_equal": image_same}
        _write_manifest(staging, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m training.realign",
                            description="Fit a model's text side to its own image tower, which stays as it is.")
    model_dir_arguments(parser, "model directory whose image tower is kept",
                        "caption JSON (Karpathy format): fitted on its train split")
    parser.add_argument("--views", default="d8", help="views of each training image: none, rot4 or d8 (default)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    done = run_model_command(parser, argv, lambda args: realign(
        Path(args.model), Path(args.data), Path(args.out), split=args.split, views=args.views, epochs=args.epochs,
        lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay, seed=args.seed,
        overwrite=args.overwrite, progress=not args.no_progress))
    if isinstance(done, int):
        return done
    args, manifest = done
    base, now = manifest["training"]["realign"]["base"]["metrics"], manifest["metrics"]
    print(f"{args.out}: {now['split']} mR {base['mR']:.2f} -> {now['mR']:.2f} "
          f"(re-ranked {base['rerank']['mR']:.2f} -> {now['rerank']['mR']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
