"""Figure 1: the image encoder through the engine (ONNX Runtime) versus torch eager, images/s.

The same architecture, on the same preprocessed tiles of real scenes, at batch 1 and 32:
- engine: ``Model.embed_preprocessed`` of a model loaded with ``load_model`` (its defaults:
  all cores, ORT_ENABLE_ALL), one ONNX call per batch; plus batch 8 and 64 (the batch default);
- torch: the exporter's ``ImageTower`` (``encode_image(normalize=True)``) in ``torch.inference_mode``;
- both with their default threads (what a user gets) and both with one thread (robust when other
  processes load the machine: multi-threaded torch degrades badly when its threads are descheduled).
Cases run in interleaved rounds (see :func:`bench.common.interleaved_rates`). Where CUDA exists
(ONNX Runtime's CUDA provider, ``torch.cuda``), fp32 and fp16 are measured too, host-to-device
copies included on both sides; otherwise those rows say why they were skipped.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .common import interleaved_rates, ratio, target

BATCHES = (1, 32)
EXTRA_ENGINE_BATCHES = (8, 64)


def _engine_case(model, pixels: np.ndarray, batch: int) -> Callable[[], int]:
    chunk = np.ascontiguousarray(pixels[:batch])

    def work() -> int:
        model.embed_preprocessed(chunk)
        return batch

    return work


def _torch_case(tower, pixels: np.ndarray, batch: int, device: str = "cpu", half: bool = False,
                threads: int | None = None):
    import torch

    chunk = torch.from_numpy(np.ascontiguousarray(pixels[:batch]))
    dtype = torch.float16 if half else torch.float32
    threads = threads or torch.get_num_threads()  # torch's default unless told

    def work() -> int:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            tower(chunk.to(device=device, dtype=dtype))
            if device != "cpu":
                torch.cuda.synchronize()
        return batch

    return work


def _ort_fp16_case(model_dir: Path, manifest: dict, pixels: np.ndarray, batch: int, scratch: Path):
    """An fp16 copy of image.onnx on ONNX Runtime's CUDA provider (fp32 inputs and outputs kept)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp16_path = scratch / "image_fp16.onnx"
    if not fp16_path.is_file():
        model16 = convert_float_to_float16(onnx.load(str(model_dir / manifest["image"].get("file", "image.onnx"))),
                                           keep_io_types=True)
        onnx.save(model16, str(fp16_path))
    session = ort.InferenceSession(str(fp16_path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    chunk = np.ascontiguousarray(pixels[:batch])

    def work() -> int:
        session.run(None, {name: chunk})
        return batch

    return work


def run(model_dir: Path, pixels: np.ndarray, rounds: int, min_seconds: float, extra: bool = True) -> dict[str, Any]:
    """Measure figure 1; ``pixels`` are preprocessed tiles float32 [>=64, 3, S, S]."""
    import torch

    from rs_text_search.core.model import load_model

    from .standin import torch_image_tower

    result: dict[str, Any] = {"cpu": {}, "cuda": {}, "notes": [], "torch_threads": torch.get_num_threads()}
    engine = load_model(model_dir, provider="cpu", batch_size=1024)
    tower, why_not = torch_image_tower(model_dir)
    single = load_model(model_dir, provider="cpu", batch_size=1024, threads=1)
    cases: dict[str, Callable[[], int]] = {}
    for batch in BATCHES:
        cases[f"engine_b{batch}"] = _engine_case(engine, pixels, batch)
        if tower is not None:
            cases[f"torch_b{batch}"] = _torch_case(tower, pixels, batch)
        cases[f"engine_1thread_b{batch}"] = _engine_case(single, pixels, batch)
        if tower is not None:
            cases[f"torch_1thread_b{batch}"] = _torch_case(tower, pixels, batch, threads=1)
    if extra:
        for batch in EXTRA_ENGINE_BATCHES:
            cases[f"engine_b{batch}"] = _engine_case(engine, pixels, batch)
    for work in cases.values():  # warm-up: first ORT/torch calls allocate and pick kernels
        work()
    try:
        result["cpu"] = interleaved_rates(cases, rounds, min_seconds)
    finally:
        torch.set_num_threads(result["torch_threads"])
    if tower is None:
        result["notes"].append(f"torch eager not measured: {why_not}")
    result["cuda"] = _run_cuda(model_dir, engine.manifest, tower, pixels, rounds, min_seconds, result["notes"])
    result["ratios"] = _ratios(result)
    labels = {"cpu": "CPU, default threads", "cpu_1thread": "CPU, 1 thread each", "cuda_fp32": "CUDA fp32",
              "cuda_fp16": "CUDA fp16"}
    result["targets"] = [target(f"engine / torch, {label}, batch {b}", result["ratios"][f"{key}_b{b}"],
                                "> 1 (ratio reported)", result["ratios"][f"{key}_b{b}"] > 1.0)
                         for key, label in labels.items() for b in BATCHES
                         if result["ratios"].get(f"{key}_b{b}") is not None]
    return result


def _run_cuda(model_dir, manifest, tower, pixels, rounds, min_seconds, notes) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from rs_text_search.core.model import load_model

    cases: dict[str, Callable[[], int]] = {}
    if "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            gpu_engine = load_model(model_dir, provider="cuda", batch_size=1024)
            for batch in BATCHES:
                cases[f"engine_fp32_b{batch}"] = _engine_case(gpu_engine, pixels, batch)
        except Exception as exc:  # a CUDA provider listed but unusable (driver, libraries): say so, go on
            notes.append(f"ONNX Runtime CUDA not measured: {exc}")
        else:
            try:
                scratch = Path(tempfile.mkdtemp(prefix="bench-fp16-"))
                for batch in BATCHES:
                    cases[f"engine_fp16_b{batch}"] = _ort_fp16_case(model_dir, manifest, pixels, batch, scratch)
            except Exception as exc:  # fp16 conversion needs the onnx package and supported ops
                notes.append(f"ONNX Runtime CUDA fp16 not measured: {exc}")
    else:
        notes.append("ONNX Runtime CUDA not measured: CUDAExecutionProvider is not available here")
    if torch.cuda.is_available() and tower is not None:
        import copy

        fp32 = copy.deepcopy(tower).cuda().eval()
        fp16 = copy.deepcopy(tower).cuda().half().eval()
        for batch in BATCHES:
            cases[f"torch_fp32_b{batch}"] = _torch_case(fp32, pixels, batch, "cuda")
            cases[f"torch_fp16_b{batch}"] = _torch_case(fp16, pixels, batch, "cuda", half=True)
    elif tower is not None:
        notes.append("torch CUDA not measured: torch.cuda.is_available() is False")
    if not cases:
        return {}
    for work in cases.values():
        work()
    return interleaved_rates(cases, rounds, min_seconds)


def _ratios(result: dict[str, Any]) -> dict[str, float | None]:
    cpu, cuda = result["cpu"], result["cuda"]

    def rate(table: dict, key: str) -> float | None:
        return table.get(key, {}).get("per_s")

    out: dict[str, float | None] = {}
    for batch in BATCHES:
        out[f"cpu_b{batch}"] = ratio(rate(cpu, f"engine_b{batch}"), rate(cpu, f"torch_b{batch}"), 2)
        out[f"cpu_1thread_b{batch}"] = ratio(rate(cpu, f"engine_1thread_b{batch}"),
                                             rate(cpu, f"torch_1thread_b{batch}"), 2)
        for precision in ("fp32", "fp16"):
            out[f"cuda_{precision}_b{batch}"] = ratio(rate(cuda, f"engine_{precision}_b{batch}"),
                                                      rate(cuda, f"torch_{precision}_b{batch}"), 2)
    return out
