from __future__ import annotations

import pytest

from mamori.patients.kana import is_katakana, search_key, to_katakana


@pytest.mark.parametrize("typed", ["ジュンイチ", "じゅんいち", "ｼﾞｭﾝｲﾁ", "ジユンイチ", "ｼﾞｭﾝ ｲﾁ"])
def test_search_key_folds_input_variants(typed: str) -> None:
    assert search_key(typed) == "ジユンイチ"


def test_to_katakana_keeps_long_vowel_and_converts_half_width() -> None:
    assert to_katakana("ｻﾄｰ") == "サトー"
    assert to_katakana("  やまだ　はなこ ") == "ヤマダ ハナコ"
    assert is_katakana("ヤマダ ハナコ")
    assert not is_katakana("山田")


def test_nfc_and_compatibility_ideographs_survive() -> None:
    # 﨑 (U+FA11) has no decomposition: NFC keeps it, so 山﨑 is stored as written.
    from mamori.patients.kana import nfc

    assert nfc("山﨑") == "山﨑"
