"""Weight-only int8 towers, whose embedding of an input does not depend on what else is in the batch.

    python -m training.quantize --model runs/old-int8 --out resources/models/NAME [--overwrite] [--image-fp16]

ONNX Runtime's ``quantize_dynamic`` stores MatMul weights in int8 (per output channel) and, at run time,
quantises each MatMul's *activations* with one scale for the whole input tensor
(``DynamicQuantizeLinear``): the range, and so the rounding, of a caption's activations then depends on
the other captions of the batch and on the padding the longest of them brings. Measured on the bundled
model: a query embedded alone and in a batch of 391 UCM captions differed by up to 0.06 (cosine 0.989),
and UCM val mR was 54.40 in one batch against 53.67 with each caption alone, as the plugin embeds a query.

:func:`weight_only` rewrites each ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scale)`` into
``DequantizeLinear(int8 weights) -> MatMul`` in float: the same int8 weights and scales (the file stays
the same size), so an embedding is a function of its own input only. (ONNX Runtime's CPU provider
runs each such pair as one fused ``MatMulNBits`` kernel that rounds each row's activations to int8 in
blocks of 32: per row, so still independent of the batch.) It also drops
the rounding of activations, which is most of int8's error: on the bundled model val mR 54.00 (every
caption alone or all at once, identical) against 53.67 for the plugin's path before. A query costs about
8 ms on one core instead of 4 (the weights are expanded on each call); indexing is untouched when only
the text tower is quantised, as ``make model`` does.

``training.export --quantize int8`` writes towers this way; this command converts a model directory
exported before (its image embeddings, when the image tower is not quantised, stay bit for bit the same).

``--image-fp16`` (:func:`float16_weights`) also stores the image tower's float32 weights as float16, read
back through casts that ONNX Runtime folds at load: half the file, computed in float32, as fast.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_export import IMAGE_FILE, TEXT_FILE, ExportError, _sha256, model_dir_arguments, run_model_command, staged
from .params import ArgumentParser, ParamsError

__all__ = ["weight_only", "float16_weights", "quantize_int8", "convert_dir", "main"]

BATCH_TOLERANCE = 1e-5  # an embedding alone vs. in a batch: float reassociation only
MIN_COSINE = 0.95  # against the dynamic tower it came from, the noisier of the two (bundled model, UCM val: 0.973)
MIN_FP16_COSINE = 0.999  # image embeddings from float16-stored weights against float32 ones


def _producers_consumers(graph):
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producer, consumers


def _only(nodes: list | None):
    return nodes[0] if nodes and len(nodes) == 1 else None


DYNAMIC_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "ConvInteger"}


def weight_only(model) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto`` from ``quantize_dynamic``) in place so that every
    int8 MatMul runs on float activations; returns how many were rewritten. Raises ``ExportError`` for a
    dynamically quantised node of another kind (ConvInteger), which this does not handle."""
    from onnx import helper

    graph = model.graph
    producer, consumers = _producers_consumers(graph)
    initializers = {init.name for init in graph.initializer}
    replace: dict[int, list] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        x_quantized, weight, _, weight_zero = node.input
        quantize = producer.get(x_quantized)
        cast = _only(consumers.get(node.output[0]))
        rescale = _only(consumers.get(cast.output[0])) if cast is not None else None
        scales = producer.get(next((n for n in rescale.input if n != cast.output[0]), "")) if rescale else None
        weight_scale = [n for n in scales.input if n in initializers] if scales is not None else []
        if (quantize is None or quantize.op_type != "DynamicQuantizeLinear" or cast.op_type != "Cast"
                or rescale.op_type != "Mul" or scales.op_type != "Mul" or len(weight_scale) != 1
                or weight not in initializers):
            raise ExportError(f"'{node.name or node.output[0]}' is not the MatMul pattern quantize_dynamic writes")
        dequantized = node.output[0] + "_weight"
        replace[id(node)] = [
            helper.make_node("DequantizeLinear", [weight, weight_scale[0], weight_zero], [dequantized], axis=1),
            helper.make_node("MatMul", [quantize.input[0], dequantized], [rescale.output[0]]),
        ]
        dropped |= {id(cast), id(rescale)}
    nodes = [new for node in graph.node if id(node) not in dropped for new in replace.get(id(node), [node])]
    needed, live = {out.name for out in graph.output}, []
    for node in reversed(nodes):  # what no output needs any more (activation quantisers, scale products) goes
        if any(out in needed for out in node.output):
            live.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(live))
    kept = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    left = sorted({node.op_type for node in graph.node} & DYNAMIC_OPS)
    if left:
        raise ExportError(f"dynamically quantised {', '.join(left)} left that this cannot make weight-only")
    return len(replace)


def float16_weights(model, min_elements: int = 256) -> int:
    """Store ``model``'s float32 weights of at least ``min_elements`` values as float16, each read back
    through a ``Cast`` to float32 (in place; returns how many). The file is about half the size and every
    operator still computes in float32: ONNX Runtime folds the casts into float32 constants when it loads
    the model, so speed is unchanged and the only change is each weight rounded to 11 significant bits.
    Weights float16 cannot hold (beyond +-65504) and DequantizeLinear's scales (ONNX Runtime fuses int8
    MatMuls only on constant scales) stay float32."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    _, consumers = _producers_consumers(graph)
    graph_inputs = {value.name for value in graph.input}
    casts = []
    for init in graph.initializer:
        readers = consumers.get(init.name, [])
        if (init.data_type != TensorProto.FLOAT or init.name in graph_inputs
                or any(node.op_type == "DequantizeLinear" for node in readers)):
            continue
        weights = numpy_helper.to_array(init)
        if weights.size < min_elements or np.abs(weights).max() > np.finfo(np.float16).max:
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(weights.astype(np.float16), name + "_fp16"))
        casts.append(helper.make_node("Cast", [name + "_fp16"], [name], name=name + "_to_fp32", to=TensorProto.FLOAT))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(casts)


def quantize_int8(path: Path) -> None:
    """Quantise the ONNX file ``path`` in place: int8 MatMul and Gather weights (per channel), float
    activations."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(path.name + ".int8")
    logging.disable(logging.WARNING)  # ORT advises pre-processing on the root logger every time
    try:
        quantize_dynamic(path, tmp, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gather"])
        model = onnx.load(str(tmp))
        weight_only(model)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    finally:
        logging.disable(logging.NOTSET)
    tmp.replace(path)


def batch_drift(model, captions: list[str], pixels: list[np.ndarray] | None = None) -> float:
    """Largest difference between embeddings computed one input at a time and all at once."""
    alone = np.concatenate([model.embed_texts([c]) for c in captions])
    drift = float(np.abs(alone - model.embed_texts(captions)).max())
    if pixels:
        alone = np.concatenate([model.embed_images([p]) for p in pixels])
        drift = max(drift, float(np.abs(alone - model.embed_images(pixels)).max()))
    return drift


def convert_dir(model_dir: Path, out: Path, data: Path, *, split: str = "val", overwrite: bool = False,
                image_fp16: bool = False) -> dict[str, Any]:
    """Write ``out``: ``model_dir`` with its dynamically quantised towers made weight-only and, with
    ``image_fp16``, its image tower's weights stored as float16 (atomically, verified on ``data``'s
    ``split``); returns its manifest."""
    import onnx

    from rs_text_search.core.errors import ModelError
    from rs_text_search.core.model import load_model

    from .data import load_records
    from .ensemble import _write_manifest
    from .evaluate import _pixels, retrieval_scores

    model_dir, out = Path(model_dir), Path(out)
    if not (model_dir / "manifest.json").is_file():
        raise ParamsError(f"'{model_dir}' is not a model directory (it has no manifest.json).")
    if out.exists() and not overwrite:
        raise ParamsError(f"'{out}' already exists; pass --overwrite to replace it.")
    records = load_records(Path(data), split, None)
    if not records:
        raise ParamsError(f"'{data}' has no images in its {split} split.")
    try:
        base = load_model(model_dir, provider="cpu")
    except ModelError as exc:
        raise ParamsError(str(exc)) from None
    manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    with staged(out, overwrite) as staging:
        shutil.copytree(model_dir, staging)
        rewritten, halved = {}, {}
        for name in (IMAGE_FILE, TEXT_FILE):
            model = onnx.load(str(staging / name))
            count = weight_only(model)
            if count:
                rewritten[name] = count
            if image_fp16 and name == IMAGE_FILE:
                halved[name] = float16_weights(model)
            if count or halved.get(name):
                onnx.checker.check_model(model)
                onnx.save(model, str(staging / name))
                manifest["files"][name] = _sha256(staging / name)
        if not rewritten and not any(halved.values()):
            raise ParamsError(f"'{model_dir}' has no dynamically quantised MatMul to convert"
                              + (" and no float32 image weights to store as float16." if image_fp16 else "."))
        _write_manifest(staging, manifest)
        converted = load_model(staging, provider="cpu")
        captions = sorted({c for r in records for c in r.captions})
        pixels = _pixels(records)
        drift = batch_drift(converted, captions[:64], pixels[:8])
        cosine = float((converted.embed_texts(captions) * np.concatenate(
            [base.embed_texts([c]) for c in captions])).sum(1).min())
        images = converted.embed_images(pixels)
        image_changed = IMAGE_FILE in rewritten or bool(halved.get(IMAGE_FILE))
        image_cosine = float((images * base.embed_images(pixels)).sum(1).min()) if image_changed else 1.0
        # float16 storage alone rounds the weights; an int8 image tower made weight-only also drops the
        # rounding of its activations, and is held to the text tower's bound
        image_bound = MIN_COSINE if IMAGE_FILE in rewritten else MIN_FP16_COSINE
        if drift > BATCH_TOLERANCE or cosine < MIN_COSINE or image_cosine < image_bound:
            raise ExportError(f"the converted model is not what it should be: batch drift {drift:.2e}, "
                              f"worst cosine to the original {cosine:.3f} (captions), {image_cosine:.4f} (images)")
        plain, reranked = retrieval_scores(images, records, converted.embed_texts, rerank=True)
        origin = {"directory": str(model_dir), "sha256": base.sha256}
        if rewritten:
            manifest.setdefault("export", {})["weight_only_int8"] = {
                "from": origin, "matmuls": rewritten, "batch_drift": drift, "min_cosine_to_dynamic": cosine}
        if any(halved.values()):
            manifest.setdefault("export", {})["float16_weights"] = {
                "from": origin, "initializers": halved, "min_image_cosine_to_float32": image_cosine}
        manifest["metrics"] = {"split": split, "data": str(data), **plain, "rerank": reranked}
        _write_manifest(staging, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m training.quantize",
                            description="Make a model's dynamically quantised int8 towers weight-only "
                                        "and, with --image-fp16, store its image weights as float16.")
    model_dir_arguments(parser, "model directory exported with --quantize int8 before",
                        "caption JSON (Karpathy format) to verify and score on")
    parser.add_argument("--image-fp16", action="store_true",
                        help="store the image tower's float32 weights as float16 (half the file; computed in "
                             "float32, as fast)")
    before: dict = {}

    def build(args) -> dict:
        source = Path(args.model) / "manifest.json"
        if source.is_file():  # what the folder had been through already, so that only this run is reported
            before.update(json.loads(source.read_text(encoding="utf-8")).get("export", {}))
        return convert_dir(Path(args.model), Path(args.out), Path(args.data), split=args.split,
                           overwrite=args.overwrite, image_fp16=args.image_fp16)

    done = run_model_command(parser, argv, build)
    if isinstance(done, int):
        return done
    args, manifest = done
    metrics, export = manifest["metrics"], manifest["export"]
    now = {key: entry for key, entry in export.items() if before.get(key) != entry}
    changes = [f"{k} {v} MatMuls made weight-only" for k, v in now.get("weight_only_int8", {}).get(
        "matmuls", {}).items()]
    changes += [f"{k} {v} weights stored as float16" for k, v in now.get("float16_weights", {}).get(
        "initializers", {}).items()]
    print(f"{args.out}: {'; '.join(changes)}; "
          f"{metrics['split']} mR {metrics['mR']:.2f} (re-ranked {metrics['rerank']['mR']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
