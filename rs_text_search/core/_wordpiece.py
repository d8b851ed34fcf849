"""BERT WordPiece as Hugging Face's fast tokenizer runs it, in the standard library.

Reproduces what open_clip's ``HFTokenizer`` (training's reference) returns for a
BERT-uncased ``vocab.txt`` such as all-MiniLM-L6-v2's: ``transformers.AutoTokenizer`` (the
Rust ``tokenizers`` library) called with ``padding="max_length", truncation=True,
max_length=context_length`` on text cleaned the open_clip way:

0. With clean=True: ``tokenize.clean_text(text, lower=False)`` (ftfy fixes, HTML entities,
   whitespace runs collapsed). With clean=False the text goes to step 1 as it is.
1. Special tokens typed in the text ("[CLS]", "[MASK]", ...) are matched first, exactly,
   and keep their own ids (the fast tokenizer's added-token pass).
2. ``BertNormalizer``: drop NUL, U+FFFD and control/format/private-use characters
   (unassigned ones are kept); turn the other whitespace into spaces; put spaces around
   CJK ideographs; strip accents (NFD, drop non-spacing marks); lowercase character by
   character (so no Greek final-sigma rule, unlike ``str.lower``).
3. ``BertPreTokenizer``: split on whitespace, and isolate each punctuation character
   (Unicode P* categories plus all ASCII symbols such as ``$ + < = > ^ ` | ~``).
4. WordPiece: greedy longest match first, continuations prefixed ``##``; a word longer
   than 100 characters or with an unmatchable rest becomes [UNK].
5. ``[CLS] ids [SEP]``, ids cut to ``context_length - 2`` first, [PAD] padding.

The Rust library classifies controls, marks and punctuation with old Unicode tables (the
``unicode_categories`` crate) but whitespace, case and NFD with current ones; the tables
below hold the characters where that differs from ``unicodedata``. Known remaining gaps:
U+11938 (its NFD differs between the two), and on Python < 3.11 letters of Unicode 14 that
Python cannot lowercase yet.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ModelError
from .tokenize import _code_set, clean_text, pack_rows

__all__ = ["WordPieceTokenizer", "normalize", "pre_tokenize"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 100
_CACHE_LIMIT = 200_000  # words; bounds memory in a long QGIS session


# The Rust library's character tables differ from this Python's unicodedata. Each table was
# measured by running tokenizers 0.23 on every code point, then compared with unicodedata
# (Unicode 14, Python 3.11) and with the newer Unicode of the ``regex`` package, so the
# lists also cover characters a newer Python knows.
# Format/control characters the Rust library keeps (newer than its tables):
_KEEP_FORMAT = _code_set("890-891 8e2 110cd 13430-1343f")
# Non-spacing marks it does not strip (newer than its tables), and one it strips (now Mc):
_NOT_MN = _code_set(
    "5c8-5c9 7fd 897-89f 8ca-8e1 9fe afa-aff b53-b55 c04 c3c d00 d3b-d3c d81 eba ece 180f 1885-1886 "
    "1abf-1af0 1df6-1dfb a82c a8c5 a8ff a9bd 10d24-10d27 10d69-10d6d 10eab-10eac 10ecb-10ecf 10ef0-10eff "
    "10f46-10f50 10f82-10f85 11070 11073-11074 110c2 111c9 111cf 1123e 11241 1133b 113bb-113c0 113ce "
    "113d0 113d2 113e1-113e2 11438-1143f 11442-11444 11446 1145e 1182f-11837 11839-1183a 1193b-1193c "
    "1193e 11943 119d4-119d7 119da-119db 119e0 11a01-11a0a 11a33-11a38 11a3b-11a3e 11a47 11a51-11a56 "
    "11a59-11a5b 11a8a-11a96 11a98-11a99 11b60 11b62-11b64 11b66 11c30-11c36 11c38-11c3d 11c3f "
    "11c92-11ca7 11caa-11cb0 11cb2-11cb3 11cb5-11cb6 11d31-11d36 11d3a 11d3c-11d3d 11d3f-11d45 11d47 "
    "11d90-11d91 11d95 11d97 11df0 11ef3-11ef4 11f00-11f01 11f36-11f3a 11f40 11f42 11f5a 13440 "
    "13447-13455 1611e-16129 1612d-1612f 16f4f 16fe4 1cf00-1cf2d 1cf30-1cf46 1d127-1d128 1d25b-1d25c "
    "1e000-1e006 1e008-1e018 1e01b-1e021 1e023-1e024 1e026-1e02a 1e08f 1e130-1e136 1e2ae 1e2ec-1e2ef "
    "1e4ec-1e4ef 1e5ee-1e5ef 1e6e3 1e6e6 1e6ee-1e6ef 1e6f5 1e944-1e94a"
)
_EXTRA_MN = _code_set("1734")
# Punctuation it does not isolate (newer than its tables), and two it does (no longer P*):
_NOT_PUNCT = _code_set(
    "61d 9fd a76 c77 c84 1b4e-1b4f 1b7d-1b7f 2e43-2e4f 2e52-2e5d 2e60-2e63 10d6e 10ead 10ed0 10f55-10f59 "
    "10f86-10f89 113d4-113d5 113d7-113d8 1144b-1144f 1145a-1145b 1145d 11660-1166c 116b9 1183b "
    "11944-11946 119e2 11a3f-11a46 11a9a-11a9c 11a9e-11aa2 11b00-11b09 11be1 11c41-11c45 11c70-11c71 "
    "11ef7-11ef8 11f43-11f4f 11fff 12ff1-12ff2 16d6d-16d6f 16e97-16e9a 16fe2 1e5ff 1e95e-1e95f"
)
_EXTRA_PUNCT = _code_set("166d 111c9")
# Lowercase mappings of Unicode 16 letters (Rust knows them; Python before 3.14 does not).
_NEW_LOWER = {0x1C89: 0x1C8A, 0xA7CB: 0x264, 0xA7CC: 0xA7CD, 0xA7CE: 0xA7CF, 0xA7D2: 0xA7D3, 0xA7D4: 0xA7D5,
              0xA7DA: 0xA7DB, 0xA7DC: 0x19B} | {c: c + 0x20 for c in range(0x10D50, 0x10D66)} | {
              c: c + 0x1B for c in range(0x16EA0, 0x16EB9)}  # fmt: skip
# Rust's char::is_whitespace, less the controls that the cleaning step deletes first.
_WHITESPACE = _code_set("9-a d 20 a0 1680 2000-200a 2028-2029 202f 205f 3000")
_CJK = _code_set("3400-4dbf 4e00-9fff f900-faff 20000-2a6df 2a700-2b81f 2b920-2ceaf 2f800-2fa1f")
_CONTROL_CATEGORIES = ("Cc", "Cf", "Co", "Cs")  # Rust's is_other; unassigned (Cn) characters are kept


@lru_cache(maxsize=65536)
def _char_action(char: str) -> str:
    """What cleaning does with one character: '' (drop), ' ' (space), 'cjk' or 'keep'."""
    code = ord(char)
    if char in "\t\n\r":
        return " "
    if code == 0 or code == 0xFFFD:
        return ""
    if unicodedata.category(char) in _CONTROL_CATEGORIES and code not in _KEEP_FORMAT:
        return ""
    if code in _WHITESPACE:
        return " "
    return "cjk" if code in _CJK else "keep"


@lru_cache(maxsize=65536)
def _is_punctuation(char: str) -> bool:
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return code in _EXTRA_PUNCT or (unicodedata.category(char)[0] == "P" and code not in _NOT_PUNCT)


@lru_cache(maxsize=65536)
def _is_stripped_mark(char: str) -> bool:
    code = ord(char)
    return code in _EXTRA_MN or (unicodedata.category(char) == "Mn" and code not in _NOT_MN)


def normalize(
    text: str, lowercase: bool = True, strip_accents: bool = True, tokenize_chinese_chars: bool = True
) -> str:
    """``BertNormalizer`` with clean_text on."""
    out = []
    for char in text:
        action = _char_action(char)
        if action == "keep":
            out.append(char)
        elif action == "cjk":
            out.append(f" {char} " if tokenize_chinese_chars else char)
        else:
            out.append(action)
    text = "".join(out)
    if strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if not _is_stripped_mark(c))
    if lowercase:
        # Per character, as Rust's char::to_lowercase: no final-sigma rule, unlike str.lower().
        text = "".join(c.lower() for c in text).translate(_NEW_LOWER)
    return text


def pre_tokenize(text: str) -> list[str]:
    """``BertPreTokenizer``: whitespace splits, each punctuation character is its own word."""
    words = []
    for chunk in text.split():  # after normalize() the only whitespace left is " "
        start = 0
        for i, char in enumerate(chunk):
            if _is_punctuation(char):
                if i > start:
                    words.append(chunk[start:i])
                words.append(char)
                start = i + 1
        if start < len(chunk):
            words.append(chunk[start:])
    return words


class WordPieceTokenizer:
    """BERT WordPiece ids as int64 arrays; see the module docstring."""

    def __init__(
        self,
        vocab_path: Path,
        context_length: int = 64,
        lowercase: bool = True,
        strip_accents: bool = True,
        tokenize_chinese_chars: bool = True,
        cls_id: int | None = None,
        sep_id: int | None = None,
        unk_id: int | None = None,
        pad_id: int | None = None,
        clean: bool = True,
    ) -> None:
        try:
            tokens = Path(vocab_path).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"The WordPiece vocabulary '{vocab_path}' cannot be read ({exc}).") from None
        if tokens and tokens[-1] == "":
            tokens.pop()  # the file's final newline
        self._vocab = {token.rstrip("\r"): i for i, token in enumerate(tokens)}

        def special(given: int | None, name: str) -> int:
            if given is not None:
                return given
            if name not in self._vocab:
                raise ModelError(f"The WordPiece vocabulary '{vocab_path}' has no {name} token.")
            return self._vocab[name]

        self.cls_id = special(cls_id, "[CLS]")
        self.sep_id = special(sep_id, "[SEP]")
        self.unk_id = special(unk_id, "[UNK]")
        self.pad_id = special(pad_id, "[PAD]")
        self.context_length = context_length
        self._clean = clean
        self._options = (lowercase, strip_accents, tokenize_chinese_chars)
        present = [t for t in SPECIAL_TOKENS if t in self._vocab]
        self._special_re = re.compile("|".join(map(re.escape, present))) if present else None
        self._cache: dict[str, list[int]] = {}

    def _greedy_pieces(self, word: str) -> list[int] | None:
        """Longest vocabulary prefix first, then "##" continuations; None when a rest matches nothing."""
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while start < end:
                found = self._vocab.get(word[start:end] if start == 0 else "##" + word[start:end])
                if found is not None:
                    break
                end -= 1
            else:
                return None
            ids.append(found)
            start = end
        return ids

    def _word_ids(self, word: str) -> list[int]:
        """Greedy longest-match-first WordPiece of one pre-tokenised word."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        ids = self._greedy_pieces(word) if len(word) <= MAX_WORD_CHARS else None
        ids = ids or [self.unk_id]
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def _segment_ids(self, segment: str) -> list[int]:
        ids: list[int] = []
        for word in pre_tokenize(normalize(segment, *self._options)):
            ids.extend(self._word_ids(word))
        return ids

    def encode(self, text: str) -> list[int]:
        if self._clean:
            text = clean_text(text, lower=False)
        if self._special_re is None:
            return self._segment_ids(text)
        ids: list[int] = []
        start = 0
        for match in self._special_re.finditer(text):
            ids += self._segment_ids(text[start : match.start()])
            ids.append(self._vocab[match.group(0)])
            start = match.end()
        return ids + self._segment_ids(text[start:])

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if isinstance(texts, str):
            texts = [texts]
        keep = self.context_length - 2  # room for [CLS] and [SEP]
        rows = [[self.cls_id, *self.encode(text)[:keep], self.sep_id] for text in texts]
        return pack_rows(rows, self.context_length, self.pad_id)
