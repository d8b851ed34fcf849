"""``python -m training.ensemble``: several exported models -> one model directory the engine loads as any other.

    python -m training.ensemble --member resources/models/a --member runs/b-export --weights 0.7,0.3 \
        --out resources/models/rs-default [--overwrite] [--data dataset.json --split val]

The members' embeddings are L2-normalised; the ensemble's is their concatenation, member *m* scaled
by ``sqrt(w_m)`` (weights summing to 1), so it is again of unit length and a cosine between two
ensemble embeddings is ``sum_m w_m cos_m``: score averaging, done inside the ONNX graphs. Nothing
changes in the engine (embed_dim is the sum of the members', which the index records).

* image.onnx takes the largest member's input size; a smaller member gets the pixels shrunk inside
  the graph by area averaging (two constant matrix products, the weights of ``core.resample``), so
  the engine preprocesses each tile once;
* ``--project-dim D``: both graphs end with one fixed [sum of dims, D] projection and a renormalisation:
  the top D right singular vectors of the (uncentred) ensemble embeddings of the training images and
  their distinct captions (``--project-data``, its train split, plus ``--project-folder``'s training
  images and template captions), fitted here with numpy. It keeps the index as small and its search
  as fast as one member's: measured on UCM val with the shipped pair, 768 -> 384 dims cost 0.3 mR
  (52.00 -> 51.7), within the spread of equal models;
* text.onnx feeds the same token ids to every member's text tower: members must share the tokenizer
  (kind, vocabulary, context length, lower-casing) and the pixel normalisation, or the ensemble is
  refused. Initialisers that are byte-identical across members (a frozen text tower, frozen early
  image blocks) are stored once, and nodes repeating an earlier node are dropped (``_eliminate_common``),
  so a shared frozen tower is stored and computed once, also where a member is itself an ensemble.

Verified before the folder is published: the engine loads it, and on real images and captions of
``--data`` its embeddings equal the weighted members' own (text exactly; the image part of a member
that was shrunk in the graph to a cosine of at least ``RESIZED_MIN_COSINE``). The retrieval metrics of
the ensemble on that split go into the manifest. Bad input exits 2 with one sentence.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_export import IMAGE_FILE, TEXT_FILE, ExportError, _sha256, run_model_command, staged
from .params import ArgumentParser, ParamsError

__all__ = ["Member", "build_ensemble", "main"]

OPSET = 17
RESIZED_MIN_COSINE = 0.95  # a member fed pixels shrunk in the graph, not by its own resize (UCM val: worst 0.969)
SAME_SPEC_KEYS = ("mean", "std", "resize_mode")  # pixel normalisation every member must share


class Member:
    """An exported model directory and its weight in the ensemble."""

    def __init__(self, directory: Path, weight: float) -> None:
        self.directory = Path(directory)
        manifest = self.directory / "manifest.json"
        if not manifest.is_file():
            raise ParamsError(f"'{self.directory}' is not a model directory (it has no manifest.json).")
        self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        self.weight = float(weight)

    @property
    def size(self) -> int:
        return int(self.manifest["image"]["size"])

    @property
    def embed_dim(self) -> int:
        return int(self.manifest["embed_dim"])

    def tokenizer_key(self) -> tuple:
        spec = self.manifest["text"]["tokenizer"]
        vocab = _sha256(self.directory / spec["vocab"])
        return spec["kind"], spec.get("context_length"), spec.get("lowercase"), vocab


def _check_members(members: list[Member]) -> None:
    if len(members) < 2:
        raise ParamsError("An ensemble needs at least two --member model directories.")
    if any(m.weight <= 0 for m in members):
        raise ParamsError("Every ensemble weight must be a positive number.")
    first = members[0]
    for member in members[1:]:
        if member.tokenizer_key() != first.tokenizer_key():
            raise ParamsError(f"'{member.directory}' tokenizes text differently from '{first.directory}'; "
                              "ensemble members must share the tokenizer.")
        for key in SAME_SPEC_KEYS:
            if member.manifest["image"].get(key) != first.manifest["image"].get(key):
                raise ParamsError(f"'{member.directory}' normalises pixels differently ({key}) from "
                                  f"'{first.directory}'; ensemble members must share it.")


def _shrink_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] area-averaging weights, rows summing to 1 (the engine's own shrinking weights)."""
    from rs_text_search.core.resample import _weights

    weights = _weights(in_size, out_size)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _merge(members: list[Member], file: str, input_name: str, size: int | None, projection: np.ndarray | None = None):
    """One ONNX model running every member's graph ``file`` on one shared input, outputs weighted and concatenated
    (then, with ``projection`` [sum of dims, D], projected and normalised again)."""
    import onnx
    from onnx import compose, helper, numpy_helper

    nodes, initializers, value_info, outputs, opsets = [], [], [], [], {}
    for number, member in enumerate(members):
        model = onnx.load(str(member.directory / file))
        if number == 0:  # the shared input is typed as the first member's, before its names are prefixed
            first_input = onnx.ValueInfoProto()
            first_input.CopyFrom(model.graph.input[0])
        for opset in model.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
        prefix = f"m{number}_"
        model = compose.add_prefix(model, prefix)
        graph = model.graph
        (member_input,) = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
        if size is not None and member.size != size:  # shrink the shared input to this member's size
            matrix = _shrink_matrix(size, member.size)
            initializers += [numpy_helper.from_array(matrix, prefix + "shrink_rows"),
                             numpy_helper.from_array(np.ascontiguousarray(matrix.T), prefix + "shrink_cols")]
            nodes += [helper.make_node("MatMul", [prefix + "shrink_rows", input_name], [prefix + "rows_shrunk"]),
                      helper.make_node("MatMul", [prefix + "rows_shrunk", prefix + "shrink_cols"], [member_input])]
        else:
            nodes.append(helper.make_node("Identity", [input_name], [member_input]))
        nodes += list(graph.node)
        initializers += list(graph.initializer)
        value_info += list(graph.value_info)
        scale = np.array([np.sqrt(member.weight)], dtype=np.float32)
        initializers.append(numpy_helper.from_array(scale, prefix + "weight_sqrt"))
        nodes.append(helper.make_node("Mul", [graph.output[0].name, prefix + "weight_sqrt"], [prefix + "weighted"]))
        outputs.append(prefix + "weighted")
        template = model
    out_dim = sum(m.embed_dim for m in members)
    if projection is None:
        nodes.append(helper.make_node("Concat", outputs, ["embeddings"], axis=1))
    else:
        out_dim = projection.shape[1]
        initializers.append(numpy_helper.from_array(projection.astype(np.float32), "projection"))
        nodes += [helper.make_node("Concat", outputs, ["concatenated"], axis=1),
                  helper.make_node("MatMul", ["concatenated", "projection"], ["projected"]),
                  helper.make_node("LpNormalization", ["projected"], ["embeddings"], axis=1, p=2)]
    shared_input = first_input
    shared_input.name = input_name
    if size is not None:
        shared_input.type.tensor_type.shape.dim[2].dim_value = size
        shared_input.type.tensor_type.shape.dim[3].dim_value = size
    output = helper.make_tensor_value_info("embeddings", onnx.TensorProto.FLOAT,
                                           ["batch", out_dim])
    initializers = _dedupe(initializers, nodes)
    nodes, gone = _eliminate_common(nodes)
    nodes, initializers = _one_consumer_per_dequantize(nodes, initializers)
    value_info = [v for v in value_info if v.name not in gone]
    graph = helper.make_graph(nodes, f"ensemble_{file.split('.')[0]}", [shared_input], [output], initializers,
                              value_info=value_info)
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    merged.ir_version = template.ir_version
    onnx.checker.check_model(merged)
    return merged


def _dedupe(initializers: list, nodes: list) -> list:
    """Initialisers with byte-identical contents stored once; node inputs renamed to the kept one."""
    from onnx import numpy_helper

    kept, renamed = {}, {}
    for tensor in initializers:
        key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(numpy_helper.to_array(tensor).tobytes()).digest())
        if key in kept:
            renamed[tensor.name] = kept[key].name
        else:
            kept[key] = tensor
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    return list(kept.values())


def _eliminate_common(nodes: list) -> tuple[list, set[str]]:
    """Nodes that repeat an earlier node (same operator, attributes and inputs) dropped, their outputs read
    from the earlier one: a frozen tower shared by the members is then computed once. Identity nodes are
    dropped too, their output read from their input, so that a member which is itself an ensemble (its
    towers behind one more Identity than a plain member's) still shares them. ``nodes`` must be in
    topological order (as each member's graph and the merged list are), and no Identity may make the
    merged graph's output. Returns (nodes, dropped output names)."""
    first: dict[tuple, Any] = {}
    renamed: dict[str, str] = {}
    kept = []
    for node in nodes:
        inputs = [renamed.get(name, name) for name in node.input]
        del node.input[:]
        node.input.extend(inputs)
        if node.op_type == "Identity" and not node.domain:
            renamed[node.output[0]] = inputs[0]
            continue
        key = (node.domain, node.op_type, tuple(inputs),
               tuple(a.SerializeToString(deterministic=True) for a in node.attribute))
        earlier = first.get(key)
        if earlier is not None and len(earlier.output) == len(node.output):
            renamed.update(zip(node.output, earlier.output))
            continue
        first[key] = node
        kept.append(node)
    return kept, set(renamed)


def _one_consumer_per_dequantize(nodes: list, initializers: list) -> tuple[list, list]:
    """Each ``DequantizeLinear`` read by several nodes copied once per reader, with its own copy of the
    int8 weights and scales. ONNX Runtime runs a weight-only int8 MatMul, ``DequantizeLinear(W) -> MatMul``,
    as one fused ``MatMulNBits`` kernel (activations rounded to int8 in blocks of 32), but only where the
    DequantizeLinear, its weights and its scales each have a single reader (seen with ONNX Runtime 1.32):
    two members' towers that share int8 weights without being merged whole would otherwise be computed
    differently in the ensemble than in each member (measured: up to 8e-3 on the bundled model's text
    embeddings). Towers merged whole (the usual case: a shared frozen text tower) need no copy.
    Returns (nodes, initializers)."""
    from onnx import helper

    by_name = {t.name: t for t in initializers}
    readers: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    out: list = []
    added: list = []
    seen: dict[str, int] = {}
    dequantizers: dict[str, Any] = {}
    for node in nodes:
        for i, name in enumerate(node.input):
            if name not in dequantizers:
                continue
            seen[name] += 1
            if seen[name] == 1:  # the first reader keeps the shared DequantizeLinear
                continue
            source = dequantizers[name]
            inputs = list(source.input)
            for k in (0, 1):  # weights and scales
                if inputs[k] in by_name:
                    copy = type(by_name[inputs[k]])()
                    copy.CopyFrom(by_name[inputs[k]])
                    copy.name = inputs[k] = f"{source.input[k]}_reader{seen[name]}"
                    added.append(copy)
            copy_node = helper.make_node("DequantizeLinear", inputs, [f"{name}_reader{seen[name]}"])
            copy_node.attribute.extend(source.attribute)
            out.append(copy_node)
            node.input[i] = copy_node.output[0]
        out.append(node)
        if node.op_type == "DequantizeLinear" and not node.domain and readers.get(node.output[0], 0) > 1:
            seen[node.output[0]] = 0
            dequantizers[node.output[0]] = node
    return out, initializers + added


def _fit_projection(staging: Path, dim: int, data: Path, folder: Path | None, limit: int) -> np.ndarray:
    """[sum of dims, dim]: the top right singular vectors of the unprojected ensemble's embeddings of ``data``'s
    train images and distinct captions (and ``folder``'s training images and class captions)."""
    from rs_text_search.core.model import load_model

    from .data import load_records, spread_subset
    from .evaluate import _pixels
    from .folder_data import class_captions, load_class_folder

    engine = load_model(staging, provider="cpu")
    records = spread_subset(load_records(Path(data), "train", None), limit)
    texts = {c for r in records for c in r.captions}
    if folder is not None:
        folder_records, classes = load_class_folder(folder, "train")
        records += spread_subset(folder_records, limit)
        texts |= {c for name in classes for c in class_captions(name)}
    rows = np.concatenate([engine.embed_images(_pixels(records)), engine.embed_texts(sorted(texts))])
    if dim > min(rows.shape):
        raise ParamsError(f"--project-dim {dim} is more than the {min(rows.shape)} dimensions the fitting data spans.")
    return np.linalg.svd(rows.astype(np.float64), full_matrices=False)[2][:dim].T.astype(np.float32)


def _check(staging: Path, members: list[Member], data: Path | None, split: str,
           projection: np.ndarray | None = None) -> dict[str, Any]:
    """Engine embeddings of the ensemble against the weighted members' (concatenated, then projected and
    normalised again when ``projection`` is given); retrieval metrics on ``data``."""
    from rs_text_search.core.model import load_model

    from .data import load_records
    from .evaluate import _pixels, retrieval_scores

    engine = load_model(staging, provider="cpu")
    if data is None:
        return {}
    records = load_records(Path(data), split, None)
    pixels = _pixels(records)
    captions = [c for r in records for c in r.captions][:64]
    image, text = engine.embed_images(pixels[:16]), engine.embed_texts(captions)
    shrunk = any(m.size != engine.image_spec.size_px for m in members)
    owns = [load_model(m.directory, provider="cpu") for m in members]
    want_text = np.concatenate([np.sqrt(m.weight) * own.embed_texts(captions) for m, own in zip(members, owns)], 1)
    want_image = np.concatenate([np.sqrt(m.weight) * own.embed_images(pixels[:16]) for m, own in zip(members, owns)],
                                axis=1)
    if projection is not None:
        want_text, want_image = (_unit(x @ projection) for x in (want_text, want_image))
    text_diff = float(np.abs(text - want_text).max())
    cosine = float(np.min(np.sum(image * want_image, axis=1) / np.linalg.norm(want_image, axis=1)))
    need = RESIZED_MIN_COSINE if shrunk else 1 - 1e-4
    if text_diff > 1e-4 or cosine < need:
        raise ExportError(f"the ensemble disagrees with its members: text max abs difference {text_diff:.2e}, "
                          f"worst image cosine {cosine:.4f} (needs {need})")
    report: dict[str, Any] = {"text_max_abs_diff": text_diff, "image_min_cosine": cosine}
    metrics, reranked = retrieval_scores(engine.embed_images(pixels), records, engine.embed_texts, rerank=True)
    report["metrics"] = {"split": split, "data": str(data), **metrics, "rerank": reranked}
    return report


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def build_ensemble(members: list[Member], out: Path, name: str | None = None, data: Path | None = None,
                   split: str = "val", overwrite: bool = False, project_dim: int = 0, project_data: Path | None = None,
                   project_folder: Path | None = None, project_limit: int = 0) -> dict[str, Any]:
    """Write the ensemble model directory ``out`` (atomically, verified); returns its manifest.

    ``project_dim`` > 0: end both graphs with the projection fitted on ``project_data`` (and ``project_folder``).
    """
    import onnx

    _check_members(members)
    if project_dim and project_data is None:
        raise ParamsError("--project-dim needs --project-data, the captions whose train split it is fitted on.")
    total = sum(m.weight for m in members)
    for member in members:
        member.weight /= total
    out = Path(out)
    if out.exists() and not overwrite:
        raise ParamsError(f"'{out}' already exists; pass --overwrite to replace it.")
    largest = max(members, key=lambda m: m.size)
    with staged(out, overwrite) as staging:
        (staging / "vocab").mkdir(parents=True)
        vocab_rel = largest.manifest["text"]["tokenizer"]["vocab"]
        shutil.copyfile(largest.directory / vocab_rel, staging / vocab_rel)
        projection = None
        for _ in range(2 if project_dim else 1):  # with a projection: fitted on the unprojected ensemble first
            onnx.save(_merge(members, IMAGE_FILE, "pixel_values", largest.size, projection), str(staging / IMAGE_FILE))
            onnx.save(_merge(members, TEXT_FILE, "input_ids", None, projection), str(staging / TEXT_FILE))
            _write_manifest(staging, _manifest(members, largest, name or out.name, vocab_rel, staging, projection))
            if project_dim and projection is None:
                projection = _fit_projection(staging, project_dim, project_data, project_folder, project_limit)
        manifest = _manifest(members, largest, name or out.name, vocab_rel, staging, projection)
        if projection is not None:
            manifest["export"]["projection"] = {"dim": project_dim, "data": str(project_data),
                                                "folder": str(project_folder) if project_folder else None,
                                                "limit": project_limit}
        _write_manifest(staging, manifest)
        report = _check(staging, members, data, split, projection)
        if "metrics" in report:
            manifest["metrics"] = report["metrics"]
            manifest["export"]["check"] = {k: report[k] for k in ("text_max_abs_diff", "image_min_cosine")}
            _write_manifest(staging, manifest)
    return manifest


def _write_manifest(staging: Path, manifest: dict[str, Any]) -> None:
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _manifest(members: list[Member], largest: Member, name: str, vocab_rel: str, staging: Path,
              projection: np.ndarray | None) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": name,
        "embed_dim": sum(m.embed_dim for m in members) if projection is None else int(projection.shape[1]),
        "image": dict(largest.manifest["image"]),
        "text": dict(largest.manifest["text"]),
        "logit_scale": float(sum(m.weight * m.manifest["logit_scale"] for m in members)),
        **({"ground_m_per_px": largest.manifest["ground_m_per_px"]} if "ground_m_per_px" in largest.manifest else {}),
        "training": {"ensemble": [{"directory": str(m.directory), "weight": round(m.weight, 6),
                                   "image_size": m.size, "name": m.manifest.get("name"),
                                   "training": m.manifest.get("training", {}),
                                   "metrics": m.manifest.get("metrics", {})} for m in members]},
        "metrics": {},
        "export": {"opset": OPSET, "ensemble": True},
        "files": {rel: _sha256(staging / rel) for rel in (IMAGE_FILE, TEXT_FILE, vocab_rel)},
    }


def _weights(text: str | None, count: int) -> list[float]:
    if text is None:
        return [1.0] * count
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise ParamsError(f"--weights takes numbers separated by commas, not '{text}'.") from None
    if len(weights) != count:
        raise ParamsError(f"--weights gives {len(weights)} weights for {count} members.")
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m training.ensemble", description=__doc__.split("\n\n")[0])
    parser.add_argument("--member", action="append", required=True, help="exported model directory (repeat)")
    parser.add_argument("--weights", help="comma-separated member weights (default: equal); normalised to sum 1")
    parser.add_argument("--out", required=True, help="model directory to write")
    parser.add_argument("--name", help="model name in the manifest (default: the folder's name)")
    parser.add_argument("--data", help="caption JSON: verify on its images and record the ensemble's metrics")
    parser.add_argument("--split", default="val")
    parser.add_argument("--project-dim", type=int, default=0,
                        help="end with a fitted projection to this many dimensions (0: the concatenation)")
    parser.add_argument("--project-data", help="caption JSON whose train split the projection is fitted on")
    parser.add_argument("--project-folder", help="class folder (e.g. AID) whose training images join the fit")
    parser.add_argument("--project-limit", type=int, default=0, help="images per source for the fit (0: all)")
    parser.add_argument("--overwrite", action="store_true")

    def build(args) -> dict[str, Any]:
        members = [Member(Path(d), w) for d, w in zip(args.member, _weights(args.weights, len(args.member)))]
        optional = {k: Path(v) if v else None for k, v in
                    (("data", args.data), ("project_data", args.project_data), ("project_folder", args.project_folder))}
        return build_ensemble(members, Path(args.out), args.name, split=args.split, overwrite=args.overwrite,
                              project_dim=args.project_dim, project_limit=args.project_limit, **optional)

    done = run_model_command(parser, argv, build)
    if isinstance(done, int):
        return done
    args, manifest = done
    metrics = manifest.get("metrics", {})
    if metrics:
        print(f"{args.out}: embed_dim {manifest['embed_dim']}, {metrics['split']} mR {metrics['mR']:.2f} "
              f"(re-ranked {metrics['rerank']['mR']:.2f})")
    else:
        print(f"{args.out}: embed_dim {manifest['embed_dim']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
