"""Model configs, pretrained weights from a local file, tower locking, tokenizer specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.training


def test_configs_resolve_by_name_path_and_open_clip(tmp_path: Path) -> None:
    import json

    from training.models import CONFIG_DIR, resolve_model_config

    for path in CONFIG_DIR.glob("*.json"):
        assert "vision_cfg" in resolve_model_config(path.stem)
    assert resolve_model_config("RN50")["vision_cfg"]["layers"] == [3, 4, 6, 3]
    (tmp_path / "m.json").write_text(json.dumps({"embed_dim": 8}))
    assert resolve_model_config(str(tmp_path / "m.json")) == {"embed_dim": 8}
    with pytest.raises(ValueError, match="unknown model"):
        resolve_model_config("no-such-model")


def test_pretrained_local_file_and_locking(tmp_path: Path) -> None:
    from training.models import build_model, load_pretrained, lock_towers
    from training.testing import tiny_model_config

    cfg = tiny_model_config()
    torch.manual_seed(1)
    source = build_model(cfg)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    torch.manual_seed(2)
    target = build_model(cfg)
    load_pretrained(target, "tiny", str(tmp_path / "weights.pt"))
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained(target, "tiny", str(tmp_path / "missing.pt"))
    lock_towers(target, lock_image=True, lock_text=False)
    assert not any(p.requires_grad for p in target.visual.parameters())
    assert target.token_embedding.weight.requires_grad and target.logit_scale.requires_grad


def test_tokenizer_specs() -> None:
    from training.models import MINILM_ALIAS, make_tokenizer, tokenizer_spec_for, vocab_source

    assert tokenizer_spec_for({"text_cfg": {"context_length": 32}}) == {"kind": "clip_bpe", "context_length": 32}
    wordpiece = tokenizer_spec_for({"text_cfg": {"hf_tokenizer_name": MINILM_ALIAS, "context_length": 16}})
    assert wordpiece["kind"] == "wordpiece" and vocab_source("wordpiece").name == "vocab.txt"
    ids = make_tokenizer(wordpiece)(["Many planes at the airport"])
    assert ids.shape == (1, 16) and ids[0, 0] == 101  # [CLS]
    with pytest.raises(ValueError, match="no engine implementation"):
        tokenizer_spec_for({"text_cfg": {"hf_tokenizer_name": "xlm-roberta-base"}})


def test_packaged_imagenet_trunk_loads_exactly_and_refuses_a_wrong_architecture() -> None:
    import copy

    from training.models import IMAGE_INITS, build_model, resolve_model_config

    cfg = resolve_model_config("rs-effnetlite0-minilm")
    _, weights_file, _ = IMAGE_INITS[cfg["image_init"]]
    source = torch.load(weights_file(), map_location="cpu", weights_only=True)
    model = build_model(cfg)
    trunk = model.visual.trunk.state_dict()
    assert torch.equal(trunk["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(trunk["blocks.6.0.conv_pwl.weight"], source["_blocks.15._project_conv.weight"])
    assert torch.equal(trunk["bn2.running_var"], source["_bn1.running_var"])  # the head's batch norm
    unloaded = build_model(cfg, load_pretrained_parts=False).visual.trunk.state_dict()
    assert not torch.equal(unloaded["conv_stem.weight"], source["_conv_stem.weight"])

    wrong = copy.deepcopy(cfg)
    wrong["vision_cfg"]["timm_model_name"] = "tf_efficientnet_lite1"
    with pytest.raises(ValueError, match="needs vision_cfg.timm_model_name 'tf_efficientnet_lite0'"):
        build_model(wrong)
    wrong["image_init"] = "no-such-weights"
    with pytest.raises(ValueError, match="unknown image_init"):
        build_model(wrong)


def test_partial_locks_leave_the_last_groups_and_layers_trainable() -> None:
    from training.models import build_model, lock_towers, resolve_model_config

    cfg = resolve_model_config("rs-effnetlite0-minilm")
    pixels = torch.randn(2, 3, 64, 64)
    model = build_model(cfg, load_pretrained_parts=False).eval()
    with torch.no_grad():
        before = model.visual.trunk(pixels)
    lock_towers(model, lock_image=True, lock_text=False)
    model.train()  # frozen batch norms keep their statistics *and their activations* (open_clip's lock drops them)
    with torch.no_grad():
        assert torch.allclose(model.visual.trunk(pixels), before, atol=1e-4)
    assert not any(p.requires_grad for p in model.visual.trunk.parameters())

    model = build_model(cfg, load_pretrained_parts=False)
    lock_towers(model, lock_image=True, lock_text=True, unlocked_text_layers=2, unlocked_image_groups=2)
    trunk = model.visual.trunk
    assert not trunk.conv_stem.weight.requires_grad and not trunk.blocks[5][0].conv_pw.weight.requires_grad
    assert trunk.blocks[6][0].conv_pw.weight.requires_grad and trunk.conv_head.weight.requires_grad
    text = model.text.transformer
    assert not text.embeddings.word_embeddings.weight.requires_grad
    trainable = [any(p.requires_grad for p in layer.parameters()) for layer in text.encoder.layer]
    assert trainable == [False] * 4 + [True] * 2
    assert model.visual.head.proj.weight.requires_grad and model.text.proj.weight.requires_grad
    with pytest.raises(ValueError, match="exceeds"):
        lock_towers(model, lock_image=False, lock_text=True, unlocked_text_layers=7)
