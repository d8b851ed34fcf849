"""``python -m training.fit``: train or fine-tune a CLIP-style dual encoder on image captions.

    python -m training.fit --data ../shared/data/ucm_captions/dataset.json --run-dir runs/ucm \
        --model rs-resnet-tiny --epochs 30 --infonce-weight 1 --bdm-weight 0.5 --triplet-weight 0.5

AdamW with linear warm-up and cosine decay, gradient clipping, seeded data order and
augmentation, autocast on CUDA (``--precision amp``), DDP when launched by ``torchrun`` (features
gathered across processes, with gradients, before the loss). Every epoch (``--eval-every``) the
validation split is embedded and scored with the published protocol, plus the object-tag and
zero-shot figures when their data is given (:mod:`training.validation`); the best validation mR
(or, with ``--select combined``, the mean of the three) selects ``best.pt``; ``last.pt``
resumes (``--resume auto``). See :mod:`training.runlog`.
"""

from __future__ import annotations

import copy
import math
import os
import random
import shlex
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .data import Augment, CaptionDataset
from .losses import BidirectionalDistributionMatching, CombinedLoss, InfoNCE, LossBatch, TripletIntraClass
from .models import (
    build_model,
    count_parameters,
    image_spec_for,
    load_pretrained,
    lock_towers,
    make_tokenizer,
    resolve_model_config,
    tokenizer_spec_for,
)  # fmt: skip
from .params import FitParams, ParamsError, parse_fit_params
from .runlog import prepare_run_dir, save_checkpoint, write_history, write_json
from .sources import SourceSampler, load_sources
from .validation import Validator, selection_score

__all__ = ["fit", "main"]

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: temperature never below 0.01


def _distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; initialises the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world


def _gather(tensor: torch.Tensor, world: int, keep_local_grad: bool) -> torch.Tensor:
    """Concatenate a tensor over all processes (rank order); the local slice keeps its gradient.

    As in open_clip: each process computes the loss over the global batch, gradients reach only
    its own features, and DDP's gradient averaging combines them.
    """
    if world == 1:
        return tensor
    parts = [torch.zeros_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.detach().contiguous())
    if keep_local_grad:
        parts[dist.get_rank()] = tensor
    return torch.cat(parts)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _build_loss(p: FitParams, embed_dim: int) -> CombinedLoss:
    parts: dict[str, tuple[float, nn.Module]] = {}
    if p.infonce_weight > 0:
        parts["infonce"] = (p.infonce_weight, InfoNCE())
    if p.bdm_weight > 0:
        parts["bdm"] = (p.bdm_weight, BidirectionalDistributionMatching(embed_dim, p.queue_size))
    if p.triplet_weight > 0:
        parts["triplet"] = (p.triplet_weight, TripletIntraClass(p.triplet_margin, p.intra_weight))
    return CombinedLoss(parts)


def _optimizer(model: nn.Module, p: FitParams) -> torch.optim.AdamW:
    """AdamW groups: no decay on gains, biases, embeddings' 1-d params and the logit scale."""
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim < 2 or "logit_scale" in name or name.endswith(".bias")
        if name.startswith("text.transformer."):  # a pretrained Hugging Face text tower
            scale = p.text_lr_scale
        elif name.startswith("visual.trunk."):  # a timm image trunk (pretrained with image_init)
            scale = p.image_lr_scale
        else:
            scale = 1.0
        groups.setdefault((no_decay, scale), []).append(param)
    return torch.optim.AdamW(
        [
            {"params": params, "weight_decay": 0.0 if no_decay else p.weight_decay, "lr": p.lr * scale}
            for (no_decay, scale), params in groups.items()
        ],  # fmt: skip
        lr=p.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def _schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def _momentum_update(online: nn.Module, momentum: nn.Module, factor: float) -> None:
    """EMA of the weights; buffers (BatchNorm running statistics) are copied as they are."""
    for target, source in zip(momentum.parameters(), online.parameters(), strict=True):
        target.mul_(factor).add_(source.detach(), alpha=1.0 - factor)
    for target, source in zip(momentum.buffers(), online.buffers(), strict=True):
        target.copy_(source)


def _autocast(device: torch.device, precision: str):
    if device.type == "cuda" and precision == "amp":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return lambda: torch.autocast("cuda", dtype=dtype)
    return nullcontext


def fit(p: FitParams, command: str | None = None) -> dict[str, Any]:
    """Train as ``p`` says; returns a summary (best epoch, best val metrics, run folder).

    command: the command line that started the run, stored in every checkpoint (a resumed run
    keeps the original one) so that ``training.export`` can write it into the manifest.
    """
    rank, local_rank, world = _distributed()
    if p.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but torch sees no CUDA device")
    use_cuda = p.device == "cuda" or (p.device == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if p.threads:
        torch.set_num_threads(p.threads)
    run_dir = Path(p.run_dir)
    resume_path = run_dir / "last.pt" if p.resume == "auto" else (Path(p.resume) if p.resume else None)
    if p.resume == "auto" and not resume_path.is_file():
        raise ValueError(f"--resume auto found no checkpoint at '{resume_path}'")
    checkpoint = torch.load(resume_path, map_location="cpu", weights_only=True) if resume_path else None
    if rank == 0:
        prepare_run_dir(run_dir, p.overwrite, resume=checkpoint is not None)
    _seed(p.seed + rank)

    model_cfg = checkpoint["model_config"] if checkpoint else resolve_model_config(p.model)
    model = build_model(model_cfg, load_pretrained_parts=checkpoint is None)
    if p.pretrained:
        load_pretrained(model, p.model, p.pretrained)
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
    lock_towers(model, p.lock_image, p.lock_text, p.unlocked_text_layers, p.unlocked_image_groups)
    model.to(device)
    image_spec = image_spec_for(model_cfg)
    tokenizer_spec = tokenizer_spec_for(model_cfg)
    tokenize = make_tokenizer(tokenizer_spec)

    sources = load_sources(p)
    train_records, val_records, n_classes = sources.train, sources.val, sources.n_classes
    augment = Augment((p.crop_scale_min, 1.0), p.rotate90, p.flip, p.jitter) if p.augment else None
    cache_px = p.cache_size_px or 2 * image_spec.size_px
    train_set = CaptionDataset(train_records, tokenize, image_spec, augment, cache_px, p.seed, sources.groups)
    generator = torch.Generator().manual_seed(p.seed)
    sampler = None
    if world > 1:
        sampler = torch.utils.data.DistributedSampler(train_set, seed=p.seed)
    elif p.data_folder:
        sampler = SourceSampler(sources.source_of, {1: p.folder_weight}, generator)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=p.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
        num_workers=p.workers, generator=generator,  # workers restart each epoch: they see set_epoch
    )  # fmt: skip
    if len(loader) == 0:
        raise ValueError(f"{len(train_set)} training images make no full batch of {p.batch_size}")
    validator = None  # built at the first validation (decodes the val images at full resolution)

    embed_dim = int(model_cfg["embed_dim"])
    loss_fn = _build_loss(p, embed_dim).to(device)
    momentum = copy.deepcopy(model).requires_grad_(False).eval() if loss_fn.needs_momentum else None
    optimizer = _optimizer(model, p)
    total_steps = p.epochs * len(loader)  # --max-steps stops early but never reshapes the schedule
    scheduler = _schedule(optimizer, min(p.warmup_steps, total_steps // 2), total_steps)
    autocast = _autocast(device, p.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=use_cuda and p.precision == "amp")
    start_epoch, step, best, history = 0, 0, -1.0, []
    if checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        loss_fn.load_state_dict(checkpoint["loss"])
        if momentum is not None and checkpoint.get("momentum"):
            momentum.load_state_dict(checkpoint["momentum"])
        start_epoch, step = checkpoint["epoch"], checkpoint["step"]
        best, history = checkpoint["best_mR"], list(checkpoint["history"])
    trained = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None)

    if checkpoint and checkpoint.get("command"):
        command = checkpoint["command"]
    meta = {
        "command": command, "model_config": model_cfg, "image": image_spec.to_manifest(), "tokenizer": tokenizer_spec,
        "params": p.to_dict(), "data": {"file": str(p.data), "train_split": p.train_split,
        "val_split": p.val_split, "n_train_images": len(train_records), "n_classes": n_classes,
        "sources": sources.summary},
    }  # fmt: skip
    if rank == 0:
        write_json(run_dir / "params.json", {**meta, "parameters": count_parameters(model),
                                             "trainable": count_parameters(model, trainable_only=True)})  # fmt: skip
    summary: dict[str, Any] = {"run_dir": str(run_dir), "best_mR": best}
    for epoch in range(start_epoch, p.epochs):
        if p.max_steps and step >= p.max_steps:
            break
        train_set.set_epoch(epoch)
        generator.manual_seed(p.seed * 100_003 + epoch)  # data order depends on (seed, epoch): resumable
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        trained.train()
        if momentum is not None:
            momentum.eval()
        sums: dict[str, float] = {}
        batches, started = 0, time.time()
        progress = _progress(loader, p.progress and rank == 0, f"epoch {epoch + 1}/{p.epochs}")
        for pixels, tokens, image_ids, class_labels, captions in progress:
            pixels, tokens = pixels.to(device, non_blocking=True), tokens.to(device, non_blocking=True)
            with autocast():
                image_features, text_features, logit_scale = trained(pixels, tokens)[:3]
                momentum_features = (None, None)
                if momentum is not None:
                    with torch.no_grad():
                        momentum_features = (
                            _gather(momentum.encode_image(pixels, normalize=True), world, False),
                            _gather(momentum.encode_text(tokens, normalize=True), world, False),
                        )
                batch = LossBatch(
                    _gather(image_features.float(), world, True), _gather(text_features.float(), world, True),
                    logit_scale.float(), _gather(image_ids.to(device), world, False),
                    _gather(class_labels.to(device), world, False),
                    *(None if f is None else f.float() for f in momentum_features),
                    train_set.caption_positives(_gather(captions.to(device), world, False)).to(device)
                    if p.caption_positives else None,
                )  # fmt: skip
                loss, parts = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if p.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            if momentum is not None:
                _momentum_update(model, momentum, p.momentum)
            step += 1
            batches += 1
            for name, value in {"loss": float(loss.detach()), **parts}.items():
                key = "loss" if name == "loss" else f"loss_{name}"
                sums[key] = sums.get(key, 0.0) + value
            if hasattr(progress, "set_postfix"):
                progress.set_postfix(loss=f"{float(loss):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if p.max_steps and step >= p.max_steps:
                break
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": scheduler.get_last_lr()[0],
                               "logit_scale": float(model.logit_scale.detach().exp()),
                               "seconds": round(time.time() - started, 2)}  # fmt: skip
        row.update({k: v / max(batches, 1) for k, v in sums.items()})
        last_epoch = epoch + 1 == p.epochs or bool(p.max_steps and step >= p.max_steps)
        if rank == 0 and ((epoch + 1) % p.eval_every == 0 or last_epoch):
            if validator is None:
                validator = Validator(val_records, image_spec, tokenize, p.rerank_top_k, sources.tag_table,
                                      sources.folder_val, sources.folder_classes)  # fmt: skip
            row.update(validator(model, device))
            metrics, reranked = validator.last
            score = selection_score(row, p.select)
            if score > best:
                best = score
                extra = {k[4:]: v for k, v in row.items() if k.startswith(("val_tag", "val_zs"))}
                summary.update(best_epoch=epoch + 1, best_metrics=metrics, best_rerank=reranked, best_extra=extra)
                save_checkpoint(run_dir / "best.pt", {**meta, "model": model.state_dict(), "epoch": epoch + 1,
                                                       "step": step, "metrics": metrics, "rerank_metrics": reranked,
                                                       "extra_metrics": extra, "selected_by": p.select})  # fmt: skip
        if rank == 0:
            history.append(row)
            write_history(run_dir, history)
            save_checkpoint(run_dir / "last.pt", {
                **meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "loss": loss_fn.state_dict(),
                "momentum": momentum.state_dict() if momentum is not None else None,
                "epoch": epoch + 1, "step": step, "best_mR": best, "history": history,
            })  # fmt: skip
            _log(row)
        if world > 1:
            dist.barrier()
    # best: the selection score (val mR unless --select combined); the summary reports the selected epoch's mR
    summary.update(steps=step, history=history, best_mR=summary.get("best_metrics", {}).get("mR", best))
    return summary


def _progress(loader, enabled: bool, description: str):
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=description, leave=False, dynamic_ncols=True)


def _log(row: dict[str, Any]) -> None:
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
    print(" ".join(f"{k}={v}" for k, v in shown.items()), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        params = parse_fit_params(argv)
        command = shlex.join(["python", "-m", "training.fit", *(sys.argv[1:] if argv is None else argv)])
        summary = fit(params, command)
    except (ParamsError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    best = summary.get("best_metrics")
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"run folder: {summary['run_dir']}; steps: {summary['steps']}; best val mR: {summary['best_mR']:.2f}"
          + (f" at epoch {summary['best_epoch']}" if best else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
