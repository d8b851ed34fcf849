"""training.ensemble: two exported models become one model directory the engine loads, whose embeddings are
the members' own, weighted and concatenated; members that cannot be combined are refused in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.training

TEXTS = ["many planes are parked next to a long building", "a dense forest", "a river crosses the town"]


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from training.testing import make_tiny_model_dir

    folder = tmp_path_factory.mktemp("members")
    return (make_tiny_model_dir(folder / "big", seed=0, image_size=32),
            make_tiny_model_dir(folder / "small", seed=1, image_size=16))


def test_ensemble_embeddings_are_the_weighted_members(members, tmp_path: Path) -> None:
    from rs_text_search.core.model import load_model
    from training.ensemble import main

    big, small = members
    out = tmp_path / "ensemble"
    assert main(["--member", str(big), "--member", str(small), "--weights", "3,1", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["embed_dim"] == 64 and manifest["image"]["size"] == 32
    assert [m["weight"] for m in manifest["training"]["ensemble"]] == [0.75, 0.25]
    ensemble, own_big, own_small = (load_model(d, provider="cpu") for d in (out, big, small))

    text = ensemble.embed_texts(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(text[:, :32], np.sqrt(0.75) * own_big.embed_texts(TEXTS), atol=1e-5)
    np.testing.assert_allclose(text[:, 32:], np.sqrt(0.25) * own_small.embed_texts(TEXTS), atol=1e-5)

    # Images constant over 2x2 blocks: the graph's area shrink to 16 px is then exactly the 16 px image.
    rng = np.random.default_rng(0)
    small_images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    images = small_images.repeat(2, axis=1).repeat(2, axis=2)
    vectors = ensemble.embed_images(images)
    np.testing.assert_allclose(vectors[:, :32], np.sqrt(0.75) * own_big.embed_images(images), atol=1e-5)
    np.testing.assert_allclose(vectors[:, 32:], np.sqrt(0.25) * own_small.embed_images(small_images), atol=1e-5)
    scores = vectors @ text.T  # a cosine of the ensemble is the weighted sum of the members' cosines
    expected = (0.75 * own_big.embed_images(images) @ own_big.embed_texts(TEXTS).T
                + 0.25 * own_small.embed_images(small_images) @ own_small.embed_texts(TEXTS).T)
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_a_shared_tower_is_stored_and_computed_once(members, tmp_path: Path) -> None:
    import onnx

    from training.ensemble import main

    big, _ = members
    out = tmp_path / "twice"
    assert main(["--member", str(big), "--member", str(big), "--out", str(out)]) == 0
    for name in ("image.onnx", "text.onnx"):
        merged, own = onnx.load(str(out / name)), onnx.load(str(big / name))
        assert len(merged.graph.initializer) <= len(own.graph.initializer) + 3  # + shrink-free weight constants
        assert len(merged.graph.node) <= len(own.graph.node) + 4  # Identity, Mul, Concat: the tower once


def test_members_with_different_tokenizers_are_refused(members, tmp_path: Path, capsys) -> None:
    from training.ensemble import main
    from training.testing import make_tiny_model_dir

    other = make_tiny_model_dir(tmp_path / "wordpiece", seed=2, tokenizer="wordpiece")
    out = tmp_path / "refused"
    assert main(["--member", str(members[0]), "--member", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "tokenizer" in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".refused*"))
    assert main(["--member", str(members[0]), "--out", str(out)]) == 2
    assert main(["--member", str(members[0]), "--member", str(tmp_path), "--out", str(out)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_a_projection_fitted_on_train_keeps_the_index_small(members, shared_data: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from rs_text_search.core.model import load_model
    from training.ensemble import main

    big, small = members
    out = tmp_path / "projected"
    captions = shared_data / "ucm_captions" / "dataset.json"
    assert main(["--member", str(big), "--member", str(small), "--out", str(out), "--project-dim", "16",
                 "--project-data", str(captions), "--project-limit", "40", "--data", str(captions)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["embed_dim"] == 16 and manifest["export"]["projection"]["dim"] == 16
    assert manifest["metrics"]["split"] == "val" and 0 <= manifest["metrics"]["mR"] <= 100
    (projection,) = [numpy_helper.to_array(t) for t in onnx.load(str(out / "text.onnx")).graph.initializer
                     if t.name == "projection"]
    np.testing.assert_allclose(projection.T @ projection, np.eye(16), atol=1e-5)  # orthonormal singular vectors
    ensemble, own_big, own_small = (load_model(d, provider="cpu") for d in (out, big, small))
    concatenated = np.concatenate([np.sqrt(0.5) * own_big.embed_texts(TEXTS),
                                   np.sqrt(0.5) * own_small.embed_texts(TEXTS)], axis=1) @ projection
    expected = concatenated / np.linalg.norm(concatenated, axis=1, keepdims=True)
    np.testing.assert_allclose(ensemble.embed_texts(TEXTS), expected, atol=1e-5)
    assert main(["--member", str(big), "--member", str(small), "--out", str(tmp_path / "x"),
                 "--project-dim", "16"]) == 2  # a projection needs data to be fitted on


def test_an_ensemble_as_a_member_shares_its_towers(members, tmp_path: Path) -> None:
    """The bundled model is itself an ensemble: ensembled again with a member that has one of its towers, the
    tower is stored and computed once (each nesting puts one more Identity before it), and the result is still
    the weighted members'."""
    import onnx

    from rs_text_search.core.model import load_model
    from training.ensemble import main

    big, small = members
    inner, outer = tmp_path / "inner", tmp_path / "outer"
    assert main(["--member", str(big), "--member", str(small), "--out", str(inner)]) == 0
    assert main(["--member", str(inner), "--member", str(big), "--out", str(outer)]) == 0
    for name in ("image.onnx", "text.onnx"):
        nested, own = onnx.load(str(outer / name)), onnx.load(str(inner / name))
        assert len(nested.graph.node) <= len(own.graph.node) + 4  # Mul, Mul, Concat: big's tower not twice
        assert len(nested.graph.initializer) <= len(own.graph.initializer) + 2
    ensemble, own_inner, own_big = (load_model(d, provider="cpu") for d in (outer, inner, big))
    expected = np.concatenate([np.sqrt(0.5) * own_inner.embed_texts(TEXTS), np.sqrt(0.5) * own_big.embed_texts(TEXTS)],
                              axis=1)
    np.testing.assert_allclose(ensemble.embed_texts(TEXTS), expected, atol=1e-5)


def _run(model, feeds: dict, optimized: Path | None = None) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_int8_weights_shared_by_two_towers_are_computed_as_in_each_tower(tmp_path: Path) -> None:
    """Two members whose towers share int8 weights but not their inputs: each MatMul of the ensemble must
    run as it runs in its own member (ONNX Runtime fuses DequantizeLinear -> MatMul only where the
    DequantizeLinear has one reader), or the ensemble's embeddings are not the members'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from training.ensemble import _eliminate_common, _one_consumer_per_dequantize

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-127, 128, (64, 32), dtype=np.int8), "w")
    scale = numpy_helper.from_array(rng.uniform(0.001, 0.01, 32).astype(np.float32), "w_scale")
    zero = numpy_helper.from_array(np.zeros(32, dtype=np.int8), "w_zero")
    two = numpy_helper.from_array(np.array([2.0], dtype=np.float32), "two")

    def model(nodes: list, outputs: list[str], initializers: list | None = None):
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", 32]) for o in outputs],
            initializers or [weight, scale, zero, two])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    def dequantize(out: str):
        return helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], [out], axis=1)

    x = rng.normal(size=(3, 64)).astype(np.float32)
    # Member 1: MatMul(x, W); member 2: MatMul(2x, W). Merged as training.ensemble merges graphs.
    (alone,) = _run(model([dequantize("dq"), helper.make_node("MatMul", ["x", "dq"], ["y"])], ["y"]), {"x": x})
    (alone_doubled,) = _run(model([dequantize("dq"), helper.make_node("Mul", ["x", "two"], ["x2"]),
                                   helper.make_node("MatMul", ["x2", "dq"], ["y"])], ["y"]), {"x": x})
    nodes, _ = _eliminate_common([dequantize("m0_dq"), helper.make_node("MatMul", ["x", "m0_dq"], ["y0"]),
                                  helper.make_node("Mul", ["x", "two"], ["x2"]), dequantize("m1_dq"),
                                  helper.make_node("MatMul", ["x2", "m1_dq"], ["y1"])])
    assert sum(n.op_type == "DequantizeLinear" for n in nodes) == 1  # the shared weights are dequantised once...
    nodes, initializers = _one_consumer_per_dequantize(nodes, [weight, scale, zero, two])
    assert sum(n.op_type == "DequantizeLinear" for n in nodes) == 2  # ...and then given to each reader
    merged = model(nodes, ["y0", "y1"], initializers)
    onnx.checker.check_model(merged)
    y0, y1 = _run(merged, {"x": x}, optimized=tmp_path / "optimized.onnx")
    np.testing.assert_allclose(y0, alone, atol=1e-6)
    np.testing.assert_allclose(y1, alone_doubled, atol=1e-6)
    fused = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert fused.count("DequantizeLinear") == 0 or fused.count("MatMulNBits") == 0  # both fused, or neither
