"""Text -> token ids for a model's text encoder, numpy and the standard library only.

This is the one definition of tokenisation shared by the engine (inside QGIS, where
torch, transformers, ``regex`` and ``ftfy`` are not available) and the training package.
Each kind reproduces, id for id, the tokenizer ``training.models.make_tokenizer`` trains
with; ``tests/core/test_tokenize.py`` compares them on every UCM caption, hand-picked hard
cases, random strings and a sweep over Unicode.

The manifest's ``text.tokenizer`` section selects the kind::

    {"kind": "clip_bpe", "vocab": "vocab/bpe_simple_vocab_16e6.txt.gz", "context_length": 77}
        open_clip's ``SimpleTokenizer`` (OpenAI CLIP byte-level BPE); see ``_bpe.py``.
        Optional ids: "sot_id", "eot_id" (default: from the merges file), "pad_id" (default 0).
    {"kind": "wordpiece", "vocab": "vocab/vocab.txt", "context_length": 64, "lowercase": true}
        BERT WordPiece as Hugging Face's fast tokenizer runs it (all-MiniLM-L6-v2), after
        open_clip's ``HFTokenizer`` cleaning; see ``_wordpiece.py``. Optional: "clean"
        ("whitespace", open_clip's default and training's; "none" for the bare Hugging Face
        tokenizer as sentence-transformers calls it), "strip_accents" (default: as
        lowercase), "tokenize_chinese_chars" (default true), ids "cls_id", "sep_id",
        "unk_id", "pad_id" (default: those of [CLS], [SEP], [UNK], [PAD] in vocab.txt).

A tokenizer is called with a list of strings and returns int64 arrays of shape
[N, context_length]: ``input_ids`` and ``attention_mask`` (1 for every real token,
special tokens included, 0 for padding).

open_clip cleans text with ``ftfy.fix_text`` before anything else. ftfy changes nothing in
ordinary text, but it does change text pasted from word processors (curly quotes,
ligatures, fullwidth letters, decomposed accents), so ``fix_text`` below redoes ftfy 6's
deterministic fixers in ftfy's order. Its mojibake repair (``fix_encoding``, a heuristic
over wrongly decoded UTF-8, most of ftfy's code) is skipped: only text that already looks
like mojibake, such as "cafÃ©" or "İ½", can tokenise differently from training.
"""

from __future__ import annotations

import html
import html.entities
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ModelError

__all__ = ["Tokenizer", "TOKENIZER_KINDS", "load_tokenizer", "pack_rows", "clean_text", "fix_text"]

TOKENIZER_KINDS = ("clip_bpe", "wordpiece")


class Tokenizer(Protocol):
    """What ``load_tokenizer`` returns."""

    context_length: int

    def encode(self, text: str) -> list[int]:
        """Ids of one text without special tokens, truncation or padding."""
        ...

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """int64 ``input_ids`` and ``attention_mask``, both [len(texts), context_length]."""
        ...


def pack_rows(rows: Sequence[Sequence[int]], context_length: int, pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad rows of ids (each at most ``context_length`` long) into the two int64 arrays."""
    input_ids = np.full((len(rows), context_length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), context_length), dtype=np.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _code_set(spec: str) -> frozenset[int]:
    """Code points from "hex hex-hex ..." (the character tables of _bpe and _wordpiece)."""
    codes: set[int] = set()
    for item in spec.split():
        low, _, high = item.partition("-")
        codes.update(range(int(low, 16), int(high or low, 16) + 1))
    return frozenset(codes)


# --- open_clip's text cleaning: ftfy 6's fixers, in the order ftfy.fix_and_explain applies them

_HTML_ENTITY_RE = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_ANSI_RE = re.compile("\033\\[((?:\\d|;)*)([a-zA-Z])")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SURROGATE_PAIR_RE = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _sloppy_cp1252(code: int) -> str:
    """Windows-1252, with its five undefined bytes kept as Latin-1 (ftfy's "sloppy" codec)."""
    try:
        return bytes([code]).decode("cp1252")
    except UnicodeDecodeError:
        return chr(code)


_C1_CONTROLS = {code: _sloppy_cp1252(code) for code in range(0x80, 0xA0)}
_LIGATURES = {
    ord(k): v
    for k, v in {
        "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž",
        "ǆ": "dž", "Ǉ": "LJ", "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj", "ﬀ": "ff",
        "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ſt", "ﬆ": "st",
    }.items()
}  # fmt: skip
_WIDTH = {0x3000: " "} | {
    code: unicodedata.normalize("NFKC", chr(code))
    for code in range(0xFF01, 0xFFF0)
    if unicodedata.normalize("NFKC", chr(code)) != chr(code)
}
_QUOTES = {0x02BC: "'"} | dict.fromkeys(range(0x2018, 0x201C), "'") | dict.fromkeys(range(0x201C, 0x2020), '"')
_CONTROLS = dict.fromkeys(
    [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFD)]
)


@lru_cache(maxsize=1)
def _html_entities() -> dict[str, str]:
    """ftfy's entity table: HTML5 names ending in ';', plus all-caps forms of unambiguous ones."""
    entities = {}
    for name, char in html.entities.html5.items():
        if name.endswith(";"):
            entities["&" + name] = char
            if name == name.lower():
                upper = "&" + name.upper()
                if html.unescape(upper) == upper:
                    entities[upper] = char.upper()
    return entities


def _unescape_entity(match: re.Match[str]) -> str:
    entity = match.group(0)
    known = _html_entities().get(entity)
    if known is not None:
        return known
    if entity.startswith("&#"):
        unescaped = html.unescape(entity)
        return entity if ";" in unescaped else unescaped  # only references that consume the ';'
    return entity


def _fix_segment(text: str, unescape: bool) -> str:
    while True:
        original = text
        if unescape:
            text = _HTML_ENTITY_RE.sub(_unescape_entity, text)
        text = text.translate(_C1_CONTROLS).translate(_LIGATURES).translate(_WIDTH).translate(_QUOTES)
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")
        text = text.replace("\u2029", "\n").replace("\x85", "\n")
        if _SURROGATE_RE.search(text):
            text = _SURROGATE_PAIR_RE.sub(
                lambda m: chr(0x10000 + (ord(m[0][0]) - 0xD800) * 0x400 + (ord(m[0][1]) - 0xDC00)), text
            )
            text = _SURROGATE_RE.sub("\ufffd", text)
        text = _ANSI_RE.sub("", text).translate(_CONTROLS)
        text = unicodedata.normalize("NFC", text)
        if text == original:
            return text


def fix_text(text: str) -> str:
    """``ftfy.fix_text`` with default settings, minus its mojibake repair (see the module doc).

    Like ftfy, works line by line; HTML entities are decoded until a line containing '<'
    is met (the text is then taken to be HTML).
    """
    out, unescape, pos = [], True, 0
    while pos < len(text):
        end = text.find("\n", pos) + 1 or len(text)
        segment = text[pos:end]
        unescape = unescape and "<" not in segment
        out.append(_fix_segment(segment, unescape))
        pos = end
    return "".join(out)


def clean_text(text: str, lower: bool) -> str:
    """open_clip's text cleaning: ``_clean_lower`` (lower=True) or ``_clean_whitespace``.

    ftfy's fixes, HTML entities decoded twice, whitespace runs collapsed to one space.
    """
    text = html.unescape(html.unescape(fix_text(text))).strip()
    text = " ".join(text.split()).strip()
    return text.lower() if lower else text


def _optional_int(spec: dict, key: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"The tokenizer setting '{key}' must be an integer, not {value!r}.")
    return value


def load_tokenizer(spec: dict, model_dir: Path | str) -> Tokenizer:
    """Build the tokenizer a manifest's ``text.tokenizer`` section describes.

    ``spec["vocab"]`` is relative to ``model_dir`` (an absolute path also works). Raises
    ``ModelError`` with one sentence for an unknown kind, a missing vocabulary file or a
    bad setting.
    """
    if not isinstance(spec, dict):
        raise ModelError("The model manifest's text tokenizer entry must be an object with a 'kind'.")
    kind = spec.get("kind")
    if kind not in TOKENIZER_KINDS:
        raise ModelError(
            f"Unknown tokenizer kind {kind!r} in the model manifest; "
            f"this version of rs_text_search knows {', '.join(TOKENIZER_KINDS)}."
        )
    if not spec.get("vocab"):
        raise ModelError(f"The model manifest's '{kind}' tokenizer names no vocabulary file ('vocab').")
    vocab_path = Path(model_dir) / str(spec["vocab"])
    if not vocab_path.is_file():
        raise ModelError(f"The tokenizer vocabulary file '{vocab_path}' does not exist.")
    context_length = _optional_int(spec, "context_length")
    if context_length is None or context_length < 2:
        raise ModelError(
            f"The model manifest's tokenizer needs a 'context_length' of at least 2, not {context_length!r}."
        )
    pad_id = _optional_int(spec, "pad_id")

    if kind == "clip_bpe":
        from ._bpe import ClipBpeTokenizer

        if spec.get("clean", "lower") != "lower":
            raise ModelError(f"The CLIP BPE tokenizer supports only 'lower' text cleaning, not {spec['clean']!r}.")
        return ClipBpeTokenizer(
            vocab_path,
            context_length=context_length,
            sot_id=_optional_int(spec, "sot_id"),
            eot_id=_optional_int(spec, "eot_id"),
            pad_id=0 if pad_id is None else pad_id,
        )

    from ._wordpiece import WordPieceTokenizer

    clean = spec.get("clean", "whitespace")
    if clean not in ("whitespace", "none"):
        raise ModelError(f"Unknown WordPiece text cleaning {clean!r}; use 'whitespace' or 'none'.")
    lowercase = bool(spec.get("lowercase", True))
    strip_accents = spec.get("strip_accents")
    return WordPieceTokenizer(
        vocab_path,
        context_length=context_length,
        lowercase=lowercase,
        strip_accents=lowercase if strip_accents is None else bool(strip_accents),
        tokenize_chinese_chars=bool(spec.get("tokenize_chinese_chars", True)),
        cls_id=_optional_int(spec, "cls_id"),
        sep_id=_optional_int(spec, "sep_id"),
        unk_id=_optional_int(spec, "unk_id"),
        pad_id=pad_id,
        clean=clean == "whitespace",
    )
