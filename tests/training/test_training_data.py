"""Caption readers, UCM class labels, augmentation and parameter validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from training.data import Augment, apply_labels, flat_captions, load_csv, load_records, ucm_class_of
from training.params import ParamsError, parse_fit_params

pytestmark = pytest.mark.training


def test_ucm_karpathy_splits_and_labels(shared_data: Path) -> None:
    data = shared_data / "ucm_captions" / "dataset.json"
    train = load_records(data, "train")
    val = load_records(data, "val")
    assert (len(train), len(val)) == (1680, 210)
    assert all(len(r.captions) == 5 for r in val)
    assert apply_labels(val, "ucm") == 21
    counts = np.bincount([r.label for r in val], minlength=21)
    # About 10 per class (9 to 13: the split is not exactly stratified); captions confirm the rule.
    assert counts.sum() == 210 and counts.min() >= 9 and counts.max() <= 13
    assert "airplane" in val[[r.label for r in val].index(1)].captions[0]
    captions, owner = flat_captions(val)
    assert len(captions) == 1050 and owner[:6].tolist() == [0, 0, 0, 0, 0, 1]
    assert all(r.path.is_file() for r in val[:5])
    with pytest.raises(ValueError, match="no images in split"):
        load_records(data, "test")


def test_ucm_class_rule() -> None:
    assert ucm_class_of(Path("1.jpg")) == 0  # agricultural00
    assert ucm_class_of(Path("101.tif")) == 1  # airplane00
    assert ucm_class_of(Path("2100.tif")) == 20  # tenniscourt99
    with pytest.raises(ValueError):
        ucm_class_of(Path("airplane00.tif"))


def test_csv_groups_captions_by_image(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text(
        "filepath,caption,split,label\na.png,red roofs,train,3\na.png,houses,train,3\nb.png,a lake,val,\n"
    )
    train = load_csv(tmp_path / "c.csv", "train")
    assert len(train) == 1 and train[0].captions == ["red roofs", "houses"] and train[0].label == 3
    assert load_csv(tmp_path / "c.csv", None)[1].path == tmp_path / "b.png"
    (tmp_path / "bad.csv").write_text("path,text\n")
    with pytest.raises(ValueError, match="filepath"):
        load_csv(tmp_path / "bad.csv", None)


def test_augment_is_seeded_and_keeps_uint8() -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    augment = Augment(crop_scale=(0.5, 1.0), jitter=0.2)
    a = augment(image, np.random.default_rng(5))
    b = augment(image, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.ndim == 3 and np.array_equal(a, b)
    plain = Augment(crop_scale=(1.0, 1.0), rotate90=True, flip=False, jitter=0.0)
    rotated = plain(image, np.random.default_rng(1))
    assert any(np.array_equal(rotated, np.rot90(image, k)) for k in range(4))


def test_params_validation(shared_data: Path, tmp_path: Path) -> None:
    data = str(shared_data / "ucm_captions" / "dataset.json")
    params = parse_fit_params(["--data", data, "--run-dir", str(tmp_path / "r"), "--bdm-weight", "0.5"])
    assert params.bdm_weight == 0.5 and params.model == "rs-resnet-tiny" and params.to_dict()["lr"] == 5e-4
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.lr = 1.0  # type: ignore[misc]
    bad = [
        (["--data", "missing.json", "--run-dir", "r"], "does not exist"),
        (["--data", data, "--run-dir", "r", "--infonce-weight", "0"], "at least one"),
        (["--data", data, "--run-dir", "r", "--batch-size", "1"], "at least 2"),
        (["--data", data, "--run-dir", "r", "--lr", "-1"], "--lr"),
        (["--data", data], "--run-dir"),
        (["--data", data, "--run-dir", "r", "--epochs", "x"], "invalid int"),
    ]
    for argv, message in bad:
        with pytest.raises(ParamsError, match=message):
            parse_fit_params(argv)


def test_caption_positives_mark_the_captions_an_image_also_has_word_for_word(shared_data: Path) -> None:
    import torch

    from training.data import CaptionDataset
    from training.models import image_spec_for, make_tokenizer, tokenizer_spec_for
    from training.testing import tiny_model_config

    records = load_records(shared_data / "ucm_captions" / "dataset.json", "val", None)
    owners: dict[str, set[int]] = {}
    for index, record in enumerate(records):
        for caption in record.captions:
            owners.setdefault(caption, set()).add(index)
    shared = next(c for c, images in owners.items() if len(images) > 1)  # UCM repeats captions across images
    a, b = sorted(owners[shared])[:2]
    other = next(i for i in range(len(records)) if shared not in records[i].captions)
    picked = [records[a], records[b], records[other]]
    cfg = tiny_model_config()
    dataset = CaptionDataset(picked, make_tokenizer(tokenizer_spec_for(cfg)), image_spec_for(cfg), cache_size_px=16)
    offsets = dataset.caption_offsets
    flat = [c for r in picked for c in r.captions]
    # image 0 drew its copy of the shared caption, image 1 its own copy, image 2 its first caption
    drawn = torch.tensor([offsets[0] + picked[0].captions.index(shared), offsets[1] + picked[1].captions.index(shared),
                          offsets[2]])  # fmt: skip
    positives = dataset.caption_positives(drawn)
    expected = torch.tensor([[float(flat[int(j)] in picked[i].captions) for j in drawn] for i in range(3)])
    assert torch.equal(positives, expected)
    assert positives[0, 1] == 1 and positives[1, 0] == 1 and positives[2, 0] == 0 and positives.diagonal().all()
    item = dataset[1]
    assert len(item) == 5 and offsets[1] <= item[4] < offsets[2]  # the drawn caption's index comes with the item
