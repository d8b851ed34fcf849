"""Smoke run of the benchmarks (``python -m bench --tiny``): every figure runs and results.json has its shape.

The numbers of a tiny run mean nothing; ``make bench`` produces the real ones. This checks that the
entry point, the child indexing process, the report and the results file keep working.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.run import main

FIGURES = ("encoder", "pipeline", "script", "memory", "search", "distributed", "overhead", "empty")


@pytest.mark.slow
@pytest.mark.training
def test_bench_tiny_run_writes_results_and_markdown(tmp_path: Path, shared_data: Path, tiny_model_dir: Path) -> None:
    results, markdown = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    code = main(["--tiny", "--model", str(tiny_model_dir), "--shared", str(shared_data.parent),
                 "--work", str(tmp_path / "work"), "--results", str(results), "--markdown", str(markdown)])

    assert code == 0
    run = json.loads(results.read_text(encoding="utf-8"))["runs"]["tiny"]
    assert run["errors"] == {}
    assert set(FIGURES) <= set(run["figures"])
    for name in ("cpu", "notes"):
        assert name in run["figures"]["encoder"]
    assert run["figures"]["encoder"]["cpu"]["engine_b32"]["per_s"] > 0
    assert run["figures"]["pipeline"]["indexing"]["tiles_total"] > 0
    assert run["figures"]["pipeline"]["efficiency"] > 0
    assert run["figures"]["memory"]["runs"]["large_engine"]["peak_rss_mib"] > 0
    assert run["figures"]["script"]["variants"]["per_tile"]["tiles_per_s_median"] > 0
    assert run["figures"]["pipeline"]["sweep"]["cases"]["engine defaults"]["efficiency_median"] > 0
    assert run["figures"]["distributed"]["comparison"]["same_rows"] and run["figures"]["distributed"]["ratio_warm"] > 0
    sizes = run["figures"]["search"]["sizes"]
    assert [s["tiles"] for s in sizes if not s["real_only"]] == [500, 2_000]
    assert all(0.0 <= s["approximate"]["recall_at_10"] <= 1.0 for s in sizes)
    assert [s["to"] for s in run["figures"]["overhead"]["summary"]["after"]] == [3, 6]
    assert "has no tile with image content" in run["figures"]["empty"]["after"]["message"]
    for figure in run["figures"].values():
        for line in figure["targets"]:
            assert {"name", "value", "target", "pass"} <= set(line)
    text = markdown.read_text(encoding="utf-8")
    assert "## Run `tiny`" in text and "### 5. Search latency and recall" in text
    charts = tmp_path / "bench" / "figures"
    for name in ("search", "pipeline"):  # drawn beside BENCHMARKS.md and linked from it
        assert (charts / f"tiny_{name}.png").stat().st_size > 10_000
        assert f"](bench/figures/tiny_{name}.png)" in text
    again = tmp_path / "again.md"  # --render redraws the report from the results file, measuring nothing
    assert main(["--render", "--results", str(results), "--markdown", str(again)]) == 0
    assert again.read_text(encoding="utf-8") == text
    assert not list(tmp_path.glob("work/index-*")), "indexing children must remove their cache folders"
