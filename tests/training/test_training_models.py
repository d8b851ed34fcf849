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
