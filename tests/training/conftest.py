"""Fixtures shared by the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def ucm_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A caption JSON of 24 train and 8 val images of UCM-Captions (3 classes), its images linked in place."""
    source = shared_data / "ucm_captions" / "dataset.json"
    if not source.is_file():
        pytest.skip(f"UCM-Captions not found at {source}")
    data = json.loads(source.read_text(encoding="utf-8"))
    keep = {"train": 24, "val": 8}
    images = []
    for entry in data["images"]:
        if keep.get(entry["split"], 0) > 0:
            keep[entry["split"]] -= 1
            images.append(entry)
    folder = tmp_path_factory.mktemp("ucm-slice")
    (folder / "images").symlink_to(source.parent / "images")
    (folder / "dataset.json").write_text(json.dumps({"dataset": "ucm-slice", "images": images}), encoding="utf-8")
    return folder / "dataset.json"
