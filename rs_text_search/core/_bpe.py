"""open_clip's ``SimpleTokenizer`` (OpenAI CLIP byte-level BPE) in the standard library.

Reproduces ``open_clip.tokenizer.SimpleTokenizer`` with its default ``clean="lower"``, id
for id, without ``regex``, ``ftfy`` or torch:

1. Cleaning: ``tokenize.clean_text(text, lower=True)`` (ftfy, HTML entities, whitespace,
   lowercase; see there, including why ftfy's mojibake repair is skipped).
2. Pre-tokenisation: open_clip's ``regex`` pattern
   ``<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+``
   (IGNORECASE) as a hand-written scanner over ``unicodedata.category``. Two IGNORECASE
   subtleties are kept: "ſ" (long s) matches "s", and U+0345 (combining ypogegrammeni,
   which case-folds to iota) matches neither the letter class nor its complement, so it
   is dropped like a space. ``regex`` ships a newer Unicode than Python's ``unicodedata``;
   the letters and numbers only it knows are listed below (``_NEW_LETTERS``).
3. Byte-level BPE with the merges file (first 48894 merges, as open_clip reads it), then
   ``[sot] + ids + [eot]``, cut to ``context_length`` with the last id set to ``eot``, and
   zero padding.
"""

from __future__ import annotations

import gzip
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ModelError
from .tokenize import _code_set, clean_text, pack_rows

__all__ = ["ClipBpeTokenizer", "pre_tokenize"]

SOT, EOT = "<start_of_text>", "<end_of_text>"
_MERGES_USED = 49152 - 256 - 2  # open_clip reads lines[1 : 49152 - 256 - 2 + 1] of the merges file
_CACHE_LIMIT = 200_000  # words; bounds memory in a long QGIS session

# --- pre-tokenisation ----------------------------------------------------------------------

_SKIP, _LETTER, _NUMBER, _OTHER = 0, 1, 2, 3
_CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")


# Letters and numbers of Unicode 15-17 that ``regex`` 2026.11 knows and Python 3.11's
# unicodedata (Unicode 14) calls unassigned; measured over every code point.
_NEW_LETTERS = _code_set(
    "558 58b-58c 88f c5c cdc 1c89-1c8a 208f 209d-209f a7cb-a7cf a7d2 a7d4 a7da-a7dd a7e2 a7f1 "
    "ab6c-ab6d 105c0-105f3 107bb-107bf 10940-10959 10d4a-10d65 10d6f-10d85 10ec2-10ec7 10ed9-10eee "
    "1123f-11240 11380-11389 1138b 1138e 11390-113b5 113b7 113d1 113d3 11b0a 11bc0-11be0 11db0-11ddb "
    "11df1 11f02 11f04-11f10 11f12-11f33 1342f 13441-13446 13460-143fa 16100-1611d 16d40-16d6c "
    "16ea0-16eb8 16ebb-16ed3 16ff2-16ff3 187f8-187ff 18cd6-18cda 18cff 18d09-18d20 18d80-18df2 "
    "18e00-19191 191a0-191d2 1b123-1b128 1b132 1b155 1b168 1d6a6 1df1f-1df81 1df90-1df96 1dfcd-1dfff "
    "1e030-1e06d 1e4d0-1e4eb 1e5d0-1e5ed 1e5f0 1e6c0-1e6de 1e6e0-1e6e2 1e6e4-1e6e5 1e6e7-1e6ed "
    "1e6f0-1e6f4 1e6fe-1e6ff 2b739-2b73f 2b81e 2cea2-2cead 2ebf0-2ee5d 31350-33479 3d000-3fc3f"
)
_NEW_NUMBERS = _code_set(
    "10d40-10d49 116d0-116e3 11bf0-11bf9 11de0-11de9 11f50-11f59 1246f 12475-1247f 12550-12686 "
    "16130-16139 16d70-16d79 16ff4-16ff6 1ccf0-1ccf9 1d2c0-1d2d3 1e4f0-1e4f9 1e5f1-1e5fa"
)


@lru_cache(maxsize=65536)
def _char_class(char: str) -> int:
    # regex's \s is Unicode White_Space: str.isspace() minus U+001C..U+001F.
    if (char.isspace() and not "\x1c" <= char <= "\x1f") or char == "\u0345":
        return _SKIP
    major = unicodedata.category(char)[0]
    if major == "C" and ord(char) in _NEW_LETTERS:
        return _LETTER
    if major == "C" and ord(char) in _NEW_NUMBERS:
        return _NUMBER
    return _LETTER if major == "L" else _NUMBER if major == "N" else _OTHER


def _fold(text: str) -> str:
    """Enough of regex's IGNORECASE for the literal alternatives (all ASCII lowercase)."""
    return text.lower().replace("ſ", "s")


def pre_tokenize(text: str) -> list[str]:
    """``regex.findall(SimpleTokenizer.pat, text)`` on cleaned text."""
    pieces: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "<":
            special = next((s for s in (SOT, EOT) if _fold(text[i : i + len(s)]) == s), None)
            if special:
                pieces.append(text[i : i + len(special)])
                i += len(special)
                continue
        if char == "'":
            suffix = next((s for s in _CONTRACTIONS if _fold(text[i + 1 : i + 1 + len(s)]) == s), None)
            if suffix:
                pieces.append(text[i : i + 1 + len(suffix)])
                i += 1 + len(suffix)
                continue
        kind = _char_class(char)
        if kind == _SKIP:
            i += 1
            continue
        j = i + 1
        if kind != _NUMBER:  # letters and "other" run greedily; numbers are single characters
            while j < n and _char_class(text[j]) == kind:
                j += 1
        pieces.append(text[i:j])
        i = j
    return pieces


# --- byte-level BPE ------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


class ClipBpeTokenizer:
    """open_clip ``SimpleTokenizer`` ids as int64 arrays; see the module docstring."""

    def __init__(
        self,
        merges_path: Path,
        context_length: int = 77,
        sot_id: int | None = None,
        eot_id: int | None = None,
        pad_id: int = 0,
    ) -> None:
        try:
            with gzip.open(merges_path, "rt", encoding="utf-8") as handle:
                lines = handle.read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ModelError(f"The BPE merges file '{merges_path}' cannot be read ({exc}).") from None
        merges = [tuple(line.split()) for line in lines[1 : _MERGES_USED + 1]]
        if len(merges) != _MERGES_USED or any(len(m) != 2 for m in merges):
            raise ModelError(f"'{merges_path}' is not CLIP's BPE merges file (bpe_simple_vocab_16e6.txt.gz).")
        self._byte_encoder = bytes_to_unicode()
        base = list(self._byte_encoder.values())
        vocab = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + [SOT, EOT]
        self._encoder = {token: i for i, token in enumerate(vocab)}
        self._ranks = {merge: i for i, merge in enumerate(merges)}
        self.context_length = context_length
        self.sot_id = self._encoder[SOT] if sot_id is None else sot_id
        self.eot_id = self._encoder[EOT] if eot_id is None else eot_id
        self.pad_id = pad_id
        self.vocab_size = len(self._encoder)
        self._specials = {SOT: [self._encoder[SOT]], EOT: [self._encoder[EOT]]}
        self._cache: dict[str, list[int]] = dict(self._specials)

    def _bpe(self, token: str) -> list[int]:
        """Ids of one byte-encoded word: merge the lowest-ranked adjacent pair until none is left."""
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = [*token[:-1], token[-1] + "</w>"]
        ranks = self._ranks
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda pair: ranks.get(pair, _MERGES_USED))
            if best not in ranks:
                break
            first, second = best
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = [self._encoder[piece] for piece in word]
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache = dict(self._specials)
        self._cache[token] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in pre_tokenize(clean_text(text, lower=True)):
            ids.extend(self._bpe("".join(self._byte_encoder[b] for b in piece.encode("utf-8"))))
        return ids

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if isinstance(texts, str):
            texts = [texts]
        rows = []
        for text in texts:
            row = [self.sot_id, *self.encode(text), self.eot_id]
            if len(row) > self.context_length:
                row = row[: self.context_length]
                row[-1] = self.eot_id  # open_clip keeps the end token when it truncates
            rows.append(row)
        return pack_rows(rows, self.context_length, self.pad_id)
