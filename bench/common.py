"""Shared helpers of the benchmarks: machine description, timing, memory readings, atomic files.

Timings on a shared machine drift with other processes' load, so comparisons are measured as
*interleaved rounds* (A, B, A, B, ...) and summarised by their median; the load average at the
start and end of a run is recorded beside the numbers.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "bench"
DEFAULT_WORK = BENCH_DIR / "work"  # git-ignored: generated rasters, stand-in model, temporary indexes
DEFAULT_SHARED = REPO_ROOT.parent / "shared"


# -- the machine -----------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def gpu_description() -> dict[str, Any]:
    """CUDA as torch and ONNX Runtime see it (both may be absent)."""
    info: dict[str, Any] = {"torch_cuda": False, "ort_cuda": False, "name": None}
    try:
        import onnxruntime as ort

        info["ort_cuda"] = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["torch_cuda"] = True
            info["name"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def machine_description() -> dict[str, Any]:
    import faiss
    import onnxruntime as ort

    versions = {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__,
                "faiss": faiss.__version__}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        pass
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "gpu": gpu_description(),
        "versions": versions,
    }


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False).stdout

    return {"commit": git("rev-parse", "HEAD").strip() or None,
            "dirty_paths": len([ln for ln in git("status", "--porcelain").splitlines() if ln.strip()])}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# -- timing ----------------------------------------------------------------------------------------
def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(seconds) * 1000.0, q)), 3)


def interleaved_rates(cases: dict[str, Callable[[], int]], rounds: int, min_seconds: float) -> dict[str, dict]:
    """Items/s of each case, measured in ``rounds`` interleaved rounds (A, B, A, B, ...).

    Each case is a callable doing one unit of work and returning how many items it processed; in
    every round it is repeated until ``min_seconds`` have passed. Returns, per case, the median
    rate over rounds and every round's rate (so drift from other load stays visible).
    """
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, work in cases.items():
            items, started = 0, time.perf_counter()
            while True:
                items += work()
                elapsed = time.perf_counter() - started
                if elapsed >= min_seconds:
                    break
            rates[name].append(items / elapsed)
    return {name: {"per_s": round(statistics.median(r), 2), "rounds": [round(v, 2) for v in r]}
            for name, r in rates.items()}


# -- memory ----------------------------------------------------------------------------------------
def proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` memory field in KiB (``VmHWM`` = peak RSS, ``VmRSS`` = current RSS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (/proc, else getrusage)."""
    kib = proc_status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kib / 1024, 1)


def current_rss_mib() -> float | None:
    kib = proc_status_kib("VmRSS")
    return None if kib is None else round(kib / 1024, 1)


# -- files -----------------------------------------------------------------------------------------
def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def atomic_write_json(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, digits)


def target(name: str, value: float | None, goal: str, passed: bool | None) -> dict[str, Any]:
    """One line of a figure's target table; ``passed`` None means it was not measured in this run."""
    return {"name": name, "value": value, "target": goal, "pass": passed}
