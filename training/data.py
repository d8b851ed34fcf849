"""Image-caption datasets, class labels and overhead-imagery augmentation.

Formats (one small reader each):

* Karpathy-style caption JSON (UCM-Captions, Sydney-Captions, RSICD, RSITMD, NWPU-Captions):
  ``{"images": [{"filename", "split", "sentences": [{"raw"}...]}...]}`` with the images in an
  ``images/`` folder beside the JSON (or ``images_dir``).
* CSV with a header ``filepath,caption`` (optionally ``split`` and ``label`` columns); rows of
  the same ``filepath`` are the captions of one image; relative paths are taken from the CSV's
  folder (or ``images_dir``).

Class labels (for class-aware objectives): ``"ucm"`` derives the UC Merced class from the image
number (image ``N`` belongs to ``sorted(classes)[(N - 1) // 100]``, see ``shared/data/README.md``),
a CSV ``filename,label`` file names them explicitly, ``None`` leaves every label at -1.

Pixels are kept in memory as uint8 (optionally shrunk to ``cache_size_px`` once, which keeps a
2-core CPU busy with the model rather than with JPEG decoding). Every batch ends in the engine's
own :func:`rs_text_search.core.preprocess.preprocess`, so training and the plugin never drift.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rs_text_search.core.preprocess import ImageSpec, preprocess, resize_uint8

__all__ = [
    "ImageRecord",
    "load_karpathy",
    "load_csv",
    "load_records",
    "spread_subset",
    "ucm_class_of",
    "apply_labels",
    "load_image",
    "Augment",
    "CaptionDataset",
    "flat_captions",
    "GROUND_M_PER_PX",
    "dataset_name",
    "dataset_ground_m",
]

UCM_CLASSES = (
    "agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral", "denseresidential",
    "forest", "freeway", "golfcourse", "harbor", "intersection", "mediumresidential", "mobilehomepark",
    "overpass", "parkinglot", "river", "runway", "sparseresidential", "storagetanks", "tenniscourt",
)  # fmt: skip  # already sorted: UC Merced's 21 classes, 100 images each


@dataclass
class ImageRecord:
    """One image and its captions. label: class index, -1 when unknown."""

    path: Path
    captions: list[str]
    split: str = "train"
    label: int = -1
    pixels: np.ndarray | None = field(default=None, repr=False)


def load_karpathy(json_path: Path, split: str | None, images_dir: Path | None = None) -> list[ImageRecord]:
    """Images of ``split`` (``None``: all) from a Karpathy-style caption JSON, in file order."""
    json_path = Path(json_path)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    if "images" not in data:
        raise ValueError(f"'{json_path}' is not a Karpathy-style caption file (no 'images' list)")
    folder = Path(images_dir) if images_dir else json_path.parent / "images"
    records = []
    for entry in data["images"]:
        if split is not None and entry.get("split") != split:
            continue
        captions = [s["raw"].strip() for s in entry.get("sentences", []) if s.get("raw", "").strip()]
        if captions:
            records.append(ImageRecord(folder / entry["filename"], captions, entry.get("split", "")))
    return records


def load_csv(csv_path: Path, split: str | None, images_dir: Path | None = None) -> list[ImageRecord]:
    """Images from a ``filepath,caption[,split][,label]`` CSV; rows of one filepath are grouped."""
    csv_path = Path(csv_path)
    folder = Path(images_dir) if images_dir else csv_path.parent
    by_path: dict[str, ImageRecord] = {}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"filepath", "caption"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"'{csv_path}' lacks the column(s) {sorted(missing)}; expected filepath,caption")
        for row in reader:
            row_split = row.get("split") or "train"
            if split is not None and row_split != split:
                continue
            record = by_path.get(row["filepath"])
            if record is None:
                label = int(row["label"]) if row.get("label", "").strip() else -1
                record = ImageRecord(folder / row["filepath"], [], row_split, label)
                by_path[row["filepath"]] = record
            if row["caption"].strip():
                record.captions.append(row["caption"].strip())
    return [r for r in by_path.values() if r.captions]


# Ground resolution of the caption datasets that have one (metres per image pixel): UCM-Captions is
# USGS orthoimagery at 1 ft, Sydney-Captions 0.5 m. RSICD, RSITMD and NWPU-Captions mix resolutions.
GROUND_M_PER_PX = {"ucm": 0.3048, "sydney": 0.5}


def dataset_name(data: Path) -> str:
    """The ``dataset`` name of a Karpathy JSON, lower case ("" for a CSV, a missing file or no name)."""
    data = Path(data)
    if data.suffix.lower() != ".json" or not data.is_file():
        return ""
    try:
        return str(json.loads(data.read_text(encoding="utf-8")).get("dataset", "")).lower()
    except (ValueError, AttributeError):
        return ""


def dataset_ground_m(data: Path) -> float | None:
    """Metres per pixel of a Karpathy JSON's images, from its ``dataset`` name (None: unknown or mixed)."""
    return GROUND_M_PER_PX.get(dataset_name(data))


def load_records(data: Path, split: str | None, images_dir: Path | None = None) -> list[ImageRecord]:
    """Karpathy JSON or CSV by file extension; raises ValueError when the split is empty."""
    data = Path(data)
    if not data.is_file():
        raise ValueError(f"caption file '{data}' does not exist")
    if data.suffix.lower() == ".json":
        records = load_karpathy(data, split, images_dir)
    elif data.suffix.lower() == ".csv":
        records = load_csv(data, split, images_dir)
    else:
        raise ValueError(f"caption file '{data}' must be a Karpathy-style .json or a .csv")
    if not records:
        raise ValueError(f"'{data}' has no images in split '{split}'")
    return records


def spread_subset(records: list[ImageRecord], count: int) -> list[ImageRecord]:
    """``count`` records spread evenly over the list (all when count is 0 or larger than the list).

    Caption files are usually sorted by class, so the first N images would all be one class.
    """
    if not count or count >= len(records):
        return records
    return [records[i] for i in np.linspace(0, len(records) - 1, count).round().astype(int)]


def ucm_class_of(path: Path) -> int:
    """UC Merced class index of UCM-Captions image ``N.ext``: ``(N - 1) // 100``."""
    match = re.fullmatch(r"(\d+)", Path(path).stem)
    if not match or not 1 <= int(match.group(1)) <= 100 * len(UCM_CLASSES):
        raise ValueError(f"'{Path(path).name}' is not a UCM-Captions image name (N.tif with 1 <= N <= 2100)")
    return (int(match.group(1)) - 1) // 100


def apply_labels(records: list[ImageRecord], labels: str | None) -> int:
    """Fill ``record.label`` from ``"ucm"``, a ``filename,label`` CSV, or leave it (None).

    Returns the number of distinct classes among the records (0 when unlabelled).
    """
    if labels == "ucm":
        for record in records:
            record.label = ucm_class_of(record.path)
    elif labels:
        table: dict[str, str] = {}
        with open(labels, newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                if len(row) >= 2 and row[0] != "filename":
                    table[Path(row[0]).name] = row[1]
        names = {name: i for i, name in enumerate(sorted(set(table.values())))}
        for record in records:
            record.label = names.get(table.get(record.path.name, ""), -1)
    return len({r.label for r in records if r.label >= 0})


def load_image(path: Path, cache_size_px: int | None = None) -> np.ndarray:
    """uint8 HxWx3 RGB; shrunk (antialiased, as the engine resizes) so its side is cache_size_px."""
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read image '{path}': {exc}") from exc
    if cache_size_px and max(pixels.shape[:2]) > cache_size_px:
        pixels = np.rint(resize_uint8(pixels, cache_size_px, cache_size_px, "bicubic")).astype(np.uint8)
    return pixels


@dataclass(frozen=True)
class Augment:
    """Random augmentation for overhead imagery on uint8 HxWx3, before the engine's preprocessing.

    Nadir images have no "up": every 90° rotation and flip is a valid view. A random resized
    crop keeps ``crop_scale`` of the area (aspect ratio 3/4..4/3); colour jitter scales
    brightness, contrast and saturation by factors in ``1 ± jitter``.
    """

    crop_scale: tuple[float, float] = (0.5, 1.0)
    rotate90: bool = True
    flip: bool = True
    jitter: float = 0.1

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = image.shape[:2]
        if self.crop_scale[0] < 1.0:
            area = h * w * rng.uniform(*self.crop_scale)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            ch = int(round(min(h, np.sqrt(area / ratio))))
            cw = int(round(min(w, np.sqrt(area * ratio))))
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            image = image[top : top + ch, left : left + cw]
        if self.rotate90:
            image = np.rot90(image, int(rng.integers(0, 4)))
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
        if self.jitter > 0:
            image = self._jitter(image.astype(np.float32), rng)
        return np.ascontiguousarray(image)

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lo, hi = 1.0 - self.jitter, 1.0 + self.jitter
        image = image * rng.uniform(lo, hi)  # brightness
        mean = image.mean()
        image = (image - mean) * rng.uniform(lo, hi) + mean  # contrast
        grey = image.mean(axis=2, keepdims=True)
        image = (image - grey) * rng.uniform(lo, hi) + grey  # saturation
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)


class CaptionDataset(torch.utils.data.Dataset):
    """One item per image: (pixels [3,S,S], token ids [L], positive group, class label, caption index).

    Each epoch visits every image once with one of its captions drawn at random (seeded by
    ``seed``, the epoch and the index, so runs and resumed runs are reproducible). The positive
    group is the image index, unless ``groups`` gives another: images of one group count as
    positives of each other in every objective (a class-folder's images share their captions).
    """

    def __init__(
        self,
        records: list[ImageRecord],
        tokenize,
        image_spec: ImageSpec,
        augment: Augment | None = None,
        cache_size_px: int | None = None,
        seed: int = 0,
        groups: np.ndarray | None = None,
    ) -> None:
        self.records = records
        self.groups = np.arange(len(records)) if groups is None else np.asarray(groups)
        self.image_spec = image_spec
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        for record in records:
            if record.pixels is None:
                record.pixels = load_image(record.path, cache_size_px)
        self.caption_offsets = np.cumsum([0] + [len(r.captions) for r in records])
        captions, self.caption_owner = flat_captions(records)
        self.caption_text = np.unique(np.asarray(captions, dtype=object), return_inverse=True)[1].reshape(-1)
        self._has_text = set(zip(self.caption_owner.tolist(), self.caption_text.tolist()))
        self.tokens = tokenize(captions)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def caption_positives(self, captions: torch.Tensor) -> torch.Tensor:
        """[B, B]: 1 where caption j's text is word for word also one of image i's captions, for the
        items whose drawn captions are ``captions`` (flat caption indices, as items return them)."""
        indices = captions.cpu().numpy()
        owners, texts = self.caption_owner[indices].tolist(), self.caption_text[indices].tolist()
        return torch.tensor([[float((o, t) in self._has_text) for t in texts] for o in owners])

    def __getitem__(self, index: int):
        rng = np.random.default_rng((self.seed, self.epoch, index))
        record = self.records[index]
        pixels = record.pixels
        if self.augment is not None:
            pixels = self.augment(pixels, rng)
        caption = self.caption_offsets[index] + int(rng.integers(0, len(record.captions)))
        batch = torch.from_numpy(preprocess([pixels], self.image_spec)[0])
        return batch, self.tokens[caption], int(self.groups[index]), record.label, int(caption)


def flat_captions(records: list[ImageRecord]) -> tuple[list[str], np.ndarray]:
    """All captions in record order and, for each, the index of its image (duplicates kept)."""
    captions = [c for r in records for c in r.captions]
    owner = np.repeat(np.arange(len(records)), [len(r.captions) for r in records])
    return captions, owner
