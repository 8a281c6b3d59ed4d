"""Kana normalisation for names and for the search key.

Stored カナ氏名 are full-width katakana in NFC (half-width input and hiragana converted).
The *search key* also folds small kana to their full-size form and drops spaces and 中黒, so a
receptionist typing ｼﾞｭﾝｲﾁ, じゅんいち or ジュンイチ finds the same patient.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import jaconv

_SMALL_TO_LARGE = str.maketrans("ァィゥェォッャュョヮヵヶ", "アイウエオツヤユヨワカケ")
_KATAKANA = re.compile(r"^[\u30A0-\u30FF\u3000 ]*$")  # katakana block incl. ー ・ and spaces


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def to_katakana(text: str) -> str:
    """Half-width → full-width (NFKC), hiragana → katakana, NFC. Returns '' for ''."""
    text = unicodedata.normalize("NFKC", text).strip()
    text = jaconv.hira2kata(text)
    text = re.sub(r"[\s\u3000]+", " ", text)
    return nfc(text)


def is_katakana(text: str) -> bool:
    return bool(_KATAKANA.match(text))


@functools.lru_cache(maxsize=4096)
def search_key(text: str) -> str:
    """The normalised key used for kana prefix search and duplicate detection. Cached: a
    patient write needs the key of the same name several times (two blind indexes, the
    duplicate and staff checks), and the key of every staff name."""
    kata = to_katakana(text)
    kata = kata.translate(_SMALL_TO_LARGE)
    return re.sub(r"[ ・]", "", kata)


def is_kana(text: str) -> bool:
    """Whether ``text`` is written in kana only (full- or half-width katakana, hiragana, the
    long-vowel mark, spaces and ・): searched as a reading, else as the name as written."""
    normal = to_katakana(text)
    return bool(normal) and all("\u30a0" <= ch <= "\u30ff" or ch in " \u3000・ー" for ch in normal)
