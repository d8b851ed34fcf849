"""Class folders, object-tag captions, source mixing and the figures fit reports beside mR (tiny data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.training


def _folder(root, classes: dict[str, int], size: int = 20):
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name.lower()}_{i}.jpg")
    (root / "notes.txt").write_text("not a class")
    return root


def test_class_phrases_and_captions() -> None:
    from training.folder_data import TEMPLATES, class_captions, class_phrase

    assert class_phrase("RailwayStation") == "railway station"
    assert class_phrase("storage_tanks") == "storage tanks"
    assert class_phrase("bare-land") == "bare land"
    assert class_phrase("Pond") == "pond"
    captions = class_captions("BaseballField")
    assert len(captions) == len(TEMPLATES) and captions[0] == "an aerial image of a baseball field"


def test_class_folder_split_is_fixed_per_image(tmp_path) -> None:
    from training.folder_data import load_class_folder

    root = _folder(tmp_path / "scenes", {"Pond": 6, "Beach": 5, "Empty": 0})
    train, classes = load_class_folder(root, "train", holdout=2, label_offset=21)
    val, _ = load_class_folder(root, "val", holdout=2)
    assert classes == ["Beach", "Pond"]  # sorted; a class folder without images is left out
    assert len(train) == 7 and len(val) == 4
    assert {r.label for r in train} == {21, 22} and {r.label for r in val} == {0, 1}
    assert not {r.path for r in train} & {r.path for r in val}
    assert all(r.split == "val" for r in val) and train[0].captions[0] == "an aerial image of a beach"
    # one more image does not reshuffle the held-out ones unless it hashes lower
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "Pond" / "pond_new.jpg")
    val_after, _ = load_class_folder(root, "val", holdout=2)
    moved = {r.path for r in val} - {r.path for r in val_after}
    assert len(moved) <= 1
    all_records, _ = load_class_folder(root, None, holdout=2)
    assert len(all_records) == 12


def test_class_folder_bad_input(tmp_path) -> None:
    from training.folder_data import load_class_folder

    with pytest.raises(ValueError, match="does not exist"):
        load_class_folder(tmp_path / "missing", "train")
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match="no class subfolders"):
        load_class_folder(tmp_path / "flat", "train")
    root = _folder(tmp_path / "small", {"Pond": 3})
    with pytest.raises(ValueError, match="has 3 images: not more than the 20 held out"):
        load_class_folder(root, "train")


def test_zero_shot_scores_by_hand() -> None:
    from training.folder_data import class_embeddings, zero_shot_scores

    classes = np.eye(6, dtype=np.float32)  # six classes on the axes
    images = np.array([[1, 0.2, 0, 0, 0, 0], [0.1, 0.9, 0, 0, 0, 0.5], [0, 0, 0, 0, 0, 1]], np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    # right; second (0.5 after 0.9); sixth (class 4 scores 0 and stable ties put it after classes 5, 0..3)
    labels = np.array([0, 5, 4])
    scores = zero_shot_scores(images, labels, classes)
    assert scores["top1"] == pytest.approx(1 / 3) and scores["top5"] == pytest.approx(2 / 3)
    assert scores["n_classes"] == 6 and scores["n_images"] == 3
    with pytest.raises(ValueError):
        zero_shot_scores(images[:0], labels[:0], classes)

    def embed(texts):  # a fake text tower: the class word picks the axis, so templates average to it
        return np.array([[1.0, 0.0] if "pond" in t else [0.0, 1.0] for t in texts], np.float32)

    emb = class_embeddings(embed, ["Pond", "Beach"])
    assert emb.shape == (2, 2) and np.allclose(emb, np.eye(2))


def test_tag_table_captions_and_precision(tmp_path, shared_data) -> None:
    from training.data import ImageRecord
    from training.tags import TAG_QUERIES, add_tag_captions, load_tags, tag_captions, tag_precision, tags_for

    table = load_tags(shared_data / "ucm_captions" / "multilabels.tsv")
    assert len(table) == 1890 and table["airplane00"] >= {"airplane"}
    record = ImageRecord(tmp_path / "101.tif", ["an airplane"], "train")  # image 101 = airplane00
    assert tags_for(record, table) == table["airplane00"]
    assert tags_for(ImageRecord(tmp_path / "x.tif", []), table) is None
    captions = tag_captions("5.jpg", {"cars", "pavement", "buildings"}, 3)
    assert captions == tag_captions("5.jpg", {"cars", "pavement", "buildings"}, 3)  # deterministic
    assert len(captions) == 3 and all("cars parked on pavement" in c for c in captions)
    assert tag_captions("5.jpg", set(), 2) == []
    assert add_tag_captions([record], table, 2) == 1 and len(record.captions) == 3

    # precision@10 by hand: three images, "water" on two of them, a fake tower that finds one
    records = [ImageRecord(tmp_path / f"{n}.tif", ["c"]) for n in (1, 2, 3)]
    small = {"agricultural00": {"water"}, "agricultural01": {"water", "trees"}, "agricultural02": set()}
    image_emb = np.eye(3, dtype=np.float32)
    queries = {TAG_QUERIES["water"]: [0.0, 0.1, 1.0], TAG_QUERIES["trees"]: [0.0, 1.0, 0.0]}
    result = tag_precision(image_emb, records, small, lambda texts: np.array([queries[t] for t in texts]), k=1)
    assert result["tag_p10/water"] == 0.0 and result["tag_p10/trees"] == 1.0 and result["tag_p10"] == 0.5
    assert set(result) == {"tag_p10", "tag_p10/water", "tag_p10/trees"}
    result = tag_precision(image_emb, records, small, lambda texts: np.array([queries[t] for t in texts]), k=10)
    assert result["tag_p10/water"] == 1.0  # both water images in the top 10, out of min(10, 2)
    with pytest.raises(ValueError, match="does not exist"):
        load_tags(tmp_path / "none.tsv")


def test_source_sampler_draws_by_weight() -> None:
    from training.sources import SourceSampler

    source_of = np.array([0] * 10 + [1] * 6)
    for weight, expected in ((0.5, 3), (1.0, 6), (2.5, 15)):
        sampler = SourceSampler(source_of, {1: weight}, torch.Generator().manual_seed(1))
        drawn = list(sampler)
        assert len(drawn) == len(sampler) == 10 + expected
        assert sorted(i for i in drawn if i < 10) == list(range(10))  # caption images once each
        folder = [i for i in drawn if i >= 10]
        assert len(folder) == expected and set(folder) <= set(range(10, 16))
        if weight == 2.5:
            assert all(folder.count(i) >= 2 for i in range(10, 16))
    a = list(SourceSampler(source_of, {1: 0.5}, torch.Generator().manual_seed(7)))
    b = list(SourceSampler(source_of, {1: 0.5}, torch.Generator().manual_seed(7)))
    assert a == b


def test_embed_unique_keeps_repeats_identical() -> None:
    from training.evaluate import embed_unique

    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts])

    out = embed_unique(embed, ["b", "aa", "b", "ccc", "aa"])
    assert len(calls) == 1 and sorted(calls[0]) == ["aa", "b", "ccc"]
    assert out.tolist() == [[1, 1], [2, 1], [1, 1], [3, 1], [2, 1]]
