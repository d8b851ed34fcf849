"""Charts of a benchmark run, drawn from ``results.json`` and linked from ``BENCHMARKS.md``.

- ``search``: p50 latency of one query against the number of tiles, for exact search (one faiss thread,
  as the engine runs a query, and faiss's default threads) and HNSW (the engine's efSearch), with HNSW's
  recall@10 written at each size, the 10 ms budget and the size where the engine switches to HNSW;
- ``pipeline``: indexing tiles/s of every engine setting of the interleaved rounds, each labelled with its
  efficiency against the in-memory encoder under the same ONNX Runtime setting.

Charts are PNG files in ``<folder>/<mode>_<chart>.png``, written atomically; :func:`draw` returns the
ones it drew, and a run without the data for a chart simply has none.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from rs_text_search.core.cache import atomic_path

__all__ = ["draw"]

LATENCY_BUDGET_MS = 10.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():  # Debian's matplotlib beside the venv's makes Axes3D complain
        warnings.simplefilter("ignore", UserWarning)
        import matplotlib.pyplot as plt
    return plt


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def _search(plt, fig: dict[str, Any], path: Path) -> Path | None:
    every = sorted((s for s in fig.get("sizes", []) if s.get("approximate")), key=lambda s: s["tiles"])
    sizes = [s for s in every if not s.get("real_only")]  # sets expanded from the real embeddings
    real = [s for s in every if s.get("real_only")]  # the real embeddings alone (or a sample of them)
    sweep = fig.get("exact_latency_sweep") or []
    if not sizes:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    exact = sweep or [{"tiles": s["tiles"], **s["exact"]} for s in sizes if s.get("exact")]
    axes.plot([e["tiles"] for e in exact], [e["p50_ms"] for e in exact], "o-", label="exact, one faiss thread")
    threaded = [e for e in exact if e.get("p50_ms_faiss_default_threads")]
    if threaded:
        axes.plot([e["tiles"] for e in threaded], [e["p50_ms_faiss_default_threads"] for e in threaded], "o:",
                  label="exact, faiss's default threads")
    hnsw = [(s["tiles"], s["approximate"]["p50_ms"], s["approximate"]["recall_at_10"]) for s in sizes]
    axes.plot([h[0] for h in hnsw], [h[1] for h in hnsw], "s--",
              label=f"HNSW (efSearch {sizes[0]['approximate'].get('ef_search')})")
    if real:
        axes.plot([s["tiles"] for s in real], [s["approximate"]["p50_ms"] for s in real], "s", mfc="none",
                  color="tab:green", label="HNSW, real embeddings alone")
    for tiles, latency, recall in hnsw + [(s["tiles"], s["approximate"]["p50_ms"], s["approximate"]["recall_at_10"])
                                          for s in real]:
        axes.annotate(f"R@10 {recall:.3f}", (tiles, latency), textcoords="offset points", xytext=(4, -12), fontsize=7)
    axes.axhline(LATENCY_BUDGET_MS, color="grey", lw=0.8, ls=":", label=f"{LATENCY_BUDGET_MS:g} ms budget")
    switch = fig.get("engine", {}).get("approximate_min_tiles")
    if switch:
        axes.axvline(switch, color="tab:red", lw=0.8, ls="--", label=f"engine switches to HNSW ({switch:,} tiles)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("tiles in the index")
    axes.set_ylabel("p50 latency of one query (ms)")
    axes.set_title("Search: one query, exact vs HNSW")
    axes.legend(fontsize=7)
    figure.tight_layout()
    try:
        return _save(figure, path)
    finally:
        plt.close(figure)


def _pipeline(plt, fig: dict[str, Any], path: Path) -> Path | None:
    cases = (fig.get("sweep") or {}).get("cases") or {}
    rows = [(name, c["tiles_per_s_median"], c.get("efficiency_median")) for name, c in cases.items()
            if c.get("tiles_per_s_median")]
    if not rows:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 0.5 * len(rows) + 1.4), dpi=110)
    names = [r[0] for r in rows][::-1]
    values = [r[1] for r in rows][::-1]
    bars = axes.barh(names, values, color=["tab:blue" if n == "engine defaults" else "tab:gray" for n in names])
    for bar, (_, _, efficiency) in zip(bars, rows[::-1]):
        if efficiency is not None:
            axes.annotate(f"efficiency {efficiency:.2f}", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                          textcoords="offset points", xytext=(4, -3), fontsize=7)
    axes.set_xlim(0, max(values) * 1.35)
    axes.set_xlabel("indexing tiles/s (median of the interleaved rounds)")
    raster = fig["sweep"].get("raster", {}).get("size_px")
    axes.set_title(f"Indexing settings on a {raster:,} px raster" if raster else "Indexing settings")
    figure.tight_layout()
    try:
        return _save(figure, path)
    finally:
        plt.close(figure)


def draw(run: dict[str, Any], mode: str, folder: Path) -> dict[str, Path]:
    """Draw the charts one run's figures allow; returns {figure name: PNG path}."""
    plt = _pyplot()
    drawn = {}
    for name, chart in (("search", _search), ("pipeline", _pipeline)):
        figure = run.get("figures", {}).get(name)
        path = chart(plt, figure, Path(folder) / f"{mode}_{name}.png") if figure else None
        if path is not None:
            drawn[name] = path
    return drawn
