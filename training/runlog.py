"""Run folders: parameters, per-epoch metrics (CSV + PNG plot) and checkpoints without pickle.

A run folder holds ``params.json`` (the frozen parameters and the resolved model config),
``metrics.csv`` (one row per epoch), ``metrics.png`` (losses and validation mR) and the
checkpoints ``last.pt`` (everything needed to resume) and ``best.pt`` (the epoch with the best
validation mR; model weights and config only). Checkpoints are ``torch.save`` of a dict of
tensors and JSON-able values, loadable with ``torch.load(..., weights_only=True)``; files are
written to a temporary name first and moved into place with ``os.replace``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_FORMAT", "prepare_run_dir", "write_json", "save_checkpoint", "write_history", "summarize"]

CHECKPOINT_FORMAT = "rs_text_search.training.checkpoint/1"


def prepare_run_dir(run_dir: Path, overwrite: bool, resume: bool) -> None:
    """Create the run folder; an existing non-empty one needs ``overwrite`` (wiped) or ``resume``."""
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise ValueError(f"run folder '{run_dir}' already exists; pass --overwrite to replace it or --resume auto")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic ``torch.save`` of a weights_only-compatible dict (tensors, numbers, str, lists, dicts)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    os.replace(tmp, path)


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` and ``metrics.png`` from all epoch rows so far."""
    if not history:
        return
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    tmp = run_dir / "metrics.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, run_dir / "metrics.csv")
    _plot(run_dir / "metrics.png", history)


def _plot(path: Path, history: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in [k for k in history[-1] if k.startswith("loss")]:
        left.plot(epochs, [row.get(key, float("nan")) for row in history], label=key)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (epoch mean)")
    left.legend(fontsize=8)
    for key, label, scale in (("val_mR", "val mR", 1), ("val_rerank_mR", "val mR, re-ranked", 1),
                              ("val_tag_p10", "tag precision@10 x 100", 100),
                              ("val_zs_top1", "zero-shot top-1 x 100", 100)):  # fmt: skip
        points = [(row["epoch"], scale * float(row[key])) for row in history if row.get(key, "") != ""]
        if points:
            right.plot(*zip(*points, strict=True), marker="o", label=label)
    right.set_xlabel("epoch")
    right.set_ylabel("validation figures (%)")
    if right.lines:
        right.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def summarize(run_dirs: list[Path]) -> str:
    """Markdown table of each run's best validation epoch by mR (from its metrics.csv).

    Tag precision@10 and zero-shot top-1 are those of the same epoch ("-" when not measured).
    """
    lines = ["| run | best epoch | i2t R@1/5/10 | t2i R@1/5/10 | val mR | re-ranked mR | tag P@10 | zero-shot top-1 "
             "| s/epoch |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for run in run_dirs:
        path = Path(run) / "metrics.csv"
        if not path.is_file():
            lines.append(f"| {Path(run).name} | (no metrics yet) | | | | | | | |")
            continue
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("val_mR")]
        if not rows:
            continue
        best = max(rows, key=lambda r: float(r["val_mR"]))
        recall = {d: "/".join(f"{float(best[f'val_{d}_r{k}']):.1f}" for k in (1, 5, 10)) for d in ("i2t", "t2i")}
        seconds = sum(float(r["seconds"]) for r in rows) / len(rows)
        extra = [f"{float(best[k]):.3f}" if best.get(k) else "-" for k in ("val_tag_p10", "val_zs_top1")]
        lines.append(f"| {Path(run).name} | {best['epoch']} of {rows[-1]['epoch']} | {recall['i2t']} | "
                     f"{recall['t2i']} | {float(best['val_mR']):.2f} | {float(best['val_rerank_mR']):.2f} | "
                     f"{extra[0]} | {extra[1]} | {seconds:.0f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(summarize([Path(p) for p in sys.argv[1:]]))
