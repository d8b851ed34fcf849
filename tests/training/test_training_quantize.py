"""training.quantize: int8 towers whose embeddings do not depend on the batch, on a tiny real model through
ONNX Runtime and the engine; converting a folder exported the old way, and bad input in one sentence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.training

CAPTIONS = ["a plane", "many planes are parked next to a long building with a car park", "a dense green forest",
            "a river crosses the town under two bridges", "tennis courts"]


@pytest.fixture(scope="module")
def float_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.testing import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("float") / "tiny", seed=5)


def _dynamic_int8_copy(source: Path, target: Path) -> Path:
    """``source`` with its text tower quantised as training.export did before: activations quantised per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from rs_text_search.core.model import file_sha256

    shutil.copytree(source, target)
    quantize_dynamic(source / "text.onnx", target / "text.onnx", weight_type=QuantType.QInt8, per_channel=True)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"]["text.onnx"] = file_sha256(target / "text.onnx")
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def _op_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_dynamic_int8_embeds_a_caption_by_its_batch_and_the_converted_model_does_not(
        float_model, ucm_slice, tmp_path, capsys) -> None:
    from rs_text_search.core.model import load_model
    from training.quantize import batch_drift, main

    dynamic = _dynamic_int8_copy(float_model, tmp_path / "dynamic")
    assert "DynamicQuantizeLinear" in _op_types(dynamic / "text.onnx")
    assert batch_drift(load_model(dynamic, provider="cpu"), CAPTIONS) > 1e-4  # the defect being fixed

    out = tmp_path / "weight-only"
    assert main(["--model", str(dynamic), "--data", str(ucm_slice), "--out", str(out), "--split", "train"]) == 0
    assert "made weight-only" in capsys.readouterr().out
    ops = _op_types(out / "text.onnx")
    assert "DynamicQuantizeLinear" not in ops and "MatMulInteger" not in ops and "DequantizeLinear" in ops
    converted = load_model(out, provider="cpu")
    assert batch_drift(converted, CAPTIONS) < 1e-5
    # the same int8 weights: close to the float model it was quantised from, the size of the dynamic file
    float_texts = load_model(float_model, provider="cpu").embed_texts(CAPTIONS)
    assert float((converted.embed_texts(CAPTIONS) * float_texts).sum(1).min()) > 0.99
    assert (out / "text.onnx").stat().st_size <= (dynamic / "text.onnx").stat().st_size * 1.01
    before, after = (json.loads((d / "manifest.json").read_text()) for d in (dynamic, out))
    assert after["files"]["image.onnx"] == before["files"]["image.onnx"]
    done = after["export"]["weight_only_int8"]
    assert done["matmuls"]["text.onnx"] > 0 and done["batch_drift"] < 1e-5 and "mR" in after["metrics"]


def test_export_int8_writes_weight_only_towers(float_model, tmp_path) -> None:
    from rs_text_search.core.model import load_model
    from training.export import quantize_dir
    from training.quantize import batch_drift

    out = shutil.copytree(float_model, tmp_path / "int8")
    report = quantize_dir(out, "int8", "both")
    assert report["sizes"]["text.onnx"]["bytes"] < report["sizes"]["text.onnx"]["bytes_fp32"] / 2
    for name in ("image.onnx", "text.onnx"):
        assert not _op_types(out / name) & {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}
    from rs_text_search.core.model import file_sha256

    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"] = {name: file_sha256(out / name) for name in manifest["files"]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    quantized, reference = load_model(out, provider="cpu"), load_model(float_model, provider="cpu")
    pixels = list(np.random.default_rng(1).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8))
    assert batch_drift(quantized, CAPTIONS, pixels) < 1e-5
    assert float((quantized.embed_texts(CAPTIONS) * reference.embed_texts(CAPTIONS)).sum(1).min()) > 0.99


@pytest.mark.parametrize("case, says", [
    ("missing", "is not a model directory"),
    ("float", "has no dynamically quantised MatMul"),
    ("exists", "already exists"),
])  # fmt: skip
def test_quantize_refuses_bad_input_in_one_sentence(float_model, ucm_slice, tmp_path, capsys, case, says) -> None:
    from training.quantize import main

    model = tmp_path / "missing" if case == "missing" else float_model
    out = tmp_path / "out"
    if case == "exists":
        model = _dynamic_int8_copy(float_model, tmp_path / "dynamic")
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    assert main(["--model", str(model), "--data", str(ucm_slice), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and says in err and len(err.splitlines()) == 1
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]  # no half-written folder left
    if case == "exists":
        assert (out / "keep.txt").read_text() == "mine"
    else:
        assert not out.exists()


def test_image_fp16_halves_the_image_file_and_keeps_its_embeddings(float_model, ucm_slice, tmp_path, capsys) -> None:
    import onnx

    from rs_text_search.core.model import load_model
    from training.quantize import batch_drift, main

    dynamic = _dynamic_int8_copy(float_model, tmp_path / "dynamic")
    out = tmp_path / "fp16"
    assert main(["--model", str(dynamic), "--data", str(ucm_slice), "--out", str(out), "--split", "train",
                 "--image-fp16"]) == 0
    said = capsys.readouterr().out
    assert "made weight-only" in said and "stored as float16" in said
    image = onnx.load(str(out / "image.onnx"))
    halves = [i for i in image.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert halves and all(n.op_type == "Cast" for n in image.graph.node[:len(halves)])
    saved = sum(len(i.raw_data) for i in halves)  # float16 bytes: what storing them as float32 took more
    assert saved > 0.5 * (float_model / "image.onnx").stat().st_size / 2  # the weights are most of the file
    assert (out / "image.onnx").stat().st_size < (float_model / "image.onnx").stat().st_size - 0.9 * saved
    pixels = list(np.random.default_rng(2).integers(0, 256, (6, 40, 40, 3), dtype=np.uint8))
    halved, reference = load_model(out, provider="cpu"), load_model(float_model, provider="cpu")
    embedded = halved.embed_images(pixels)
    assert not np.array_equal(embedded, reference.embed_images(pixels))  # the weights were rounded ...
    assert float((embedded * reference.embed_images(pixels)).sum(1).min()) > 0.999  # ... and no more than that
    assert batch_drift(halved, CAPTIONS, pixels) < 1e-5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["export"]["float16_weights"]["initializers"]["image.onnx"] == len(halves)

    # a folder with nothing left to do for either change is refused, in one sentence
    again = tmp_path / "again"
    assert main(["--model", str(out), "--data", str(ucm_slice), "--out", str(again), "--image-fp16"]) == 2
    assert "no float32 image weights" in capsys.readouterr().err and not again.exists()
