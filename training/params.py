"""Command-line parameters of ``training.fit``: parsed in groups, validated, frozen into a dataclass.

Nothing is bolted onto the parsed arguments afterwards: :func:`parse_fit_params` returns a
:class:`FitParams` whose fields are exactly the options below, and ``FitParams.to_dict()``
is what a run folder's ``params.json`` and every checkpoint store. Bad input raises
:class:`ParamsError` with one sentence; the entry points print it and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rs_text_search.core.errors import RsTextSearchError

__all__ = ["ParamsError", "USER_ERRORS", "ArgumentParser", "FitParams", "fit_parser", "parse_fit_params"]


class ParamsError(ValueError):
    """A command-line value is missing, malformed or inconsistent (exit code 2)."""


# What an entry point prints as one sentence with exit code 2: bad options or data, unreadable files,
# and the engine's own errors (a missing or damaged model directory, say).
USER_ERRORS = (ValueError, OSError, RsTextSearchError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`ParamsError` instead of printing usage and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise ParamsError(message)


@dataclass(frozen=True)
class FitParams:
    # data
    data: str
    images: str | None
    train_split: str
    val_split: str
    labels: str
    train_limit: int
    val_limit: int
    cache_size_px: int
    workers: int
    # augmentation
    augment: bool
    crop_scale_min: float
    rotate90: bool
    flip: bool
    jitter: float
    # model
    model: str
    pretrained: str | None
    lock_image: bool
    lock_text: bool
    unlocked_text_layers: int
    unlocked_image_groups: int
    # objectives
    infonce_weight: float
    bdm_weight: float
    triplet_weight: float
    intra_weight: float
    triplet_margin: float
    queue_size: int
    momentum: float
    # optimisation
    epochs: int
    max_steps: int
    batch_size: int
    lr: float
    text_lr_scale: float
    image_lr_scale: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    seed: int
    precision: str
    device: str
    threads: int
    # evaluation and run
    eval_every: int
    rerank_top_k: int
    run_dir: str
    overwrite: bool
    resume: str | None
    progress: bool
    # more sources and model selection (defaults keep older checkpoints' params readable)
    data_folder: str | None = None
    folder_weight: float = 1.0
    folder_holdout: int = 20
    tags: str | None = None
    tag_captions: int = 0
    select: str = "mR"
    caption_positives: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitParams:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def fit_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m training.fit",
        description="Train or fine-tune a CLIP-style dual encoder on image captions.",
    )
    g = parser.add_argument_group("data")
    g.add_argument("--data", required=True, help="Karpathy-style caption JSON or filepath,caption CSV")
    g.add_argument("--images", help="image folder (default: images/ beside the JSON, or the CSV's folder)")
    g.add_argument("--train-split", default="train")
    g.add_argument("--val-split", default="val", help="model selection uses this split only")
    g.add_argument("--labels", default="auto", help="class labels: auto (UCM rule for UCM), ucm, none, or a CSV")
    g.add_argument("--train-limit", type=int, default=0, help="use N training images spread over the split (0: all)")
    g.add_argument("--val-limit", type=int, default=0, help="use N validation images spread over the split (0: all)")
    g.add_argument("--cache-size-px", type=int, default=0, help="shrink images once to this side (0: 2x input)")
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument("--data-folder", help="labelled image folder (one subfolder per class, e.g. AID) mixed in")
    g.add_argument("--folder-weight", type=float, default=1.0,
                   help="draws per epoch of each folder image, relative to a caption image's one "
                        "(0: train on none, only report zero-shot accuracy on the held-out images)")
    g.add_argument("--folder-holdout", type=int, default=20, help="images per class held out for zero-shot val")
    g.add_argument("--tags", help="UCM multilabels.tsv: object-tag captions and the tag query figure")
    g.add_argument("--tag-captions", type=int, default=0, help="generated tag captions per training image")
    g = parser.add_argument_group("augmentation")
    g.add_argument("--no-augment", dest="augment", action="store_false", help="disable all augmentation")
    g.add_argument("--crop-scale-min", type=float, default=0.5, help="random resized crop keeps >= this area")
    g.add_argument("--no-rotate90", dest="rotate90", action="store_false")
    g.add_argument("--no-flip", dest="flip", action="store_false")
    g.add_argument("--jitter", type=float, default=0.1, help="brightness/contrast/saturation factor range 1±x")
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="rs-resnet-tiny", help="training/model_configs name, JSON path or open_clip name")
    g.add_argument("--pretrained", help="open_clip pretrained tag (downloads when online) or a local checkpoint file")
    g.add_argument("--lock-image", action="store_true", help="freeze the image tower (LiT)")
    g.add_argument("--lock-text", action="store_true", help="freeze the text tower")
    g.add_argument("--unlocked-text-layers", type=int, default=0, help="with --lock-text: train the last N layers")
    g.add_argument("--unlocked-image-groups", type=int, default=0,
                   help="with --lock-image: train the last N layer groups of the image tower")
    g = parser.add_argument_group("objectives (weights; 0 disables)")
    g.add_argument("--infonce-weight", type=float, default=1.0, help="symmetric InfoNCE")
    g.add_argument("--caption-positives", action="store_true",
                   help="InfoNCE: a caption that is word for word one of another image's captions in the batch "
                        "is a positive of that image too, not a negative (UCM repeats captions within a class)")
    g.add_argument("--bdm-weight", type=float, default=0.0, help="momentum queues + distribution matching")
    g.add_argument("--triplet-weight", type=float, default=0.0, help="hardest-negative triplet + intra-class term")
    g.add_argument("--intra-weight", type=float, default=0.1, help="intra-class term inside the triplet objective")
    g.add_argument("--triplet-margin", type=float, default=0.2)
    g.add_argument("--queue-size", type=int, default=1024, help="negative queue length (BDM)")
    g.add_argument("--momentum", type=float, default=0.995, help="momentum encoder EMA factor (BDM)")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--max-steps", type=int, default=0, help="stop after N steps (schedule spans --epochs)")
    g.add_argument("--batch-size", type=int, default=64, help="per process")
    g.add_argument("--lr", type=float, default=5e-4, help="peak AdamW learning rate")
    g.add_argument("--text-lr-scale", type=float, default=1.0, help="multiplies the lr of a pretrained HF text tower")
    g.add_argument("--image-lr-scale", type=float, default=1.0, help="multiplies the lr of a timm image trunk")
    g.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay (not on gains, biases, logit scale)")
    g.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up, then cosine decay to 0")
    g.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: off)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--precision", choices=["amp", "fp32"], default="amp", help="amp = bf16/fp16 autocast on CUDA only")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    g = parser.add_argument_group("evaluation and run folder")
    g.add_argument("--eval-every", type=int, default=1, help="validate every N epochs (and after the last)")
    g.add_argument("--rerank-top-k", type=int, default=10, help="candidates re-ranked for the re-rank metrics")
    g.add_argument("--select", choices=["mR", "combined"], default="mR",
                   help="best.pt by val mR, or by the mean of mR, 100 x tag precision@10 and 100 x zero-shot top-1")
    g.add_argument("--run-dir", required=True, help="run folder: params.json, metrics.csv, plot, checkpoints")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    g.add_argument("--resume", help="checkpoint to continue from, or 'auto' for RUN_DIR/last.pt")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")
    return parser


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ParamsError(message)


def parse_fit_params(argv: list[str] | None) -> FitParams:
    """Parse and validate ``training.fit`` arguments; raises :class:`ParamsError`."""
    ns = fit_parser().parse_args(argv)
    values = vars(ns)
    _check(Path(ns.data).is_file(), f"caption file '{ns.data}' does not exist")
    _check(ns.data_folder is None or Path(ns.data_folder).is_dir(), f"image folder '{ns.data_folder}' does not exist")
    _check(ns.tags is None or Path(ns.tags).is_file(), f"tag table '{ns.tags}' does not exist")
    _check(ns.tag_captions == 0 or ns.tags is not None, "--tag-captions needs --tags (the multilabels.tsv file)")
    _check(ns.folder_weight >= 0, "--folder-weight must not be negative")
    _check(ns.folder_holdout >= 1, "--folder-holdout must be at least 1")
    _check(ns.images is None or Path(ns.images).is_dir(), f"image folder '{ns.images}' does not exist")
    _check(
        ns.labels in ("auto", "ucm", "none") or Path(ns.labels).is_file(),
        f"--labels must be auto, ucm, none or an existing CSV file, not '{ns.labels}'",
    )
    for name in ("train_limit", "val_limit", "cache_size_px", "workers", "max_steps", "warmup_steps",
                 "unlocked_text_layers", "unlocked_image_groups", "threads", "tag_captions"):  # fmt: skip
        _check(values[name] >= 0, f"--{name.replace('_', '-')} must be zero or positive")
    for name in ("epochs", "batch_size", "eval_every", "queue_size", "rerank_top_k"):
        _check(values[name] >= 1, f"--{name.replace('_', '-')} must be at least 1")
    _check(ns.batch_size >= 2, "--batch-size must be at least 2 (contrastive losses need negatives)")
    for name in ("infonce_weight", "bdm_weight", "triplet_weight", "intra_weight", "weight_decay", "grad_clip",
                 "jitter", "triplet_margin"):  # fmt: skip
        _check(values[name] >= 0, f"--{name.replace('_', '-')} must not be negative")
    _check(
        ns.infonce_weight + ns.bdm_weight + ns.triplet_weight > 0,
        "at least one of --infonce-weight, --bdm-weight, --triplet-weight must be positive",
    )
    _check(0 < ns.lr < 1, f"--lr must be in (0, 1), not {ns.lr}")
    _check(ns.text_lr_scale > 0, "--text-lr-scale must be positive")
    _check(ns.image_lr_scale > 0, "--image-lr-scale must be positive")
    _check(0 < ns.crop_scale_min <= 1, "--crop-scale-min must be in (0, 1]")
    _check(ns.jitter < 1, "--jitter must be below 1")
    _check(0 <= ns.momentum < 1, "--momentum must be in [0, 1)")
    _check(not (ns.lock_image and ns.lock_text and ns.unlocked_text_layers == 0 and ns.unlocked_image_groups == 0),
           "--lock-image with --lock-text leaves nothing to train but the logit scale")  # fmt: skip
    _check(ns.lock_image or ns.unlocked_image_groups == 0, "--unlocked-image-groups needs --lock-image")
    resume = ns.resume
    if resume and resume != "auto":
        _check(Path(resume).is_file(), f"checkpoint '{resume}' to resume from does not exist")
    _check(not (resume and ns.pretrained), "--resume and --pretrained exclude each other (the checkpoint has weights)")
    return FitParams(**values)
