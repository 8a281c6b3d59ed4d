"""Vital signs as the nurse enters them: LOINC code, unit, reference range (flags H/L) and a
plausible range — a value outside it is a typing error (36.5 typed as 365), refused with a
message instead of stored."""

from __future__ import annotations

import decimal
from dataclasses import dataclass

from mamori.clinical.schemas import ObservationIn
from mamori.errors import InvalidInput


@dataclass(frozen=True)
class VitalSign:
    key: str
    code: str
    name_ja: str
    name_en: str
    unit: str  # UCUM
    unit_label: str
    ref_low: str
    ref_high: str
    low: decimal.Decimal  # plausible range
    high: decimal.Decimal
    step: str


D = decimal.Decimal
VITAL_SIGNS = (
    VitalSign(
        "temp", "8310-5", "体温", "Temperature", "Cel", "℃", "35.5", "37.4", D(30), D(44), "0.1"
    ),
    VitalSign(
        "sbp",
        "8480-6",
        "収縮期血圧",
        "Systolic BP",
        "mm[Hg]",
        "mmHg",
        "90",
        "139",
        D(40),
        D(300),
        "1",
    ),
    VitalSign(
        "dbp",
        "8462-4",
        "拡張期血圧",
        "Diastolic BP",
        "mm[Hg]",
        "mmHg",
        "60",
        "89",
        D(20),
        D(200),
        "1",
    ),
    VitalSign("pulse", "8867-4", "脈拍", "Pulse", "/min", "回/分", "60", "100", D(20), D(250), "1"),
    VitalSign("spo2", "59408-5", "SpO2", "SpO2", "%", "%", "96", "100", D(50), D(100), "1"),
    VitalSign(
        "resp",
        "9279-1",
        "呼吸数",
        "Respiratory rate",
        "/min",
        "回/分",
        "12",
        "20",
        D(4),
        D(80),
        "1",
    ),
    VitalSign(
        "weight", "29463-7", "体重", "Body weight", "kg", "kg", "", "", D("0.3"), D(300), "0.1"
    ),
    VitalSign("height", "8302-2", "身長", "Body height", "cm", "cm", "", "", D(30), D(230), "0.1"),
)


def vital_observations(values: dict[str, str]) -> list[ObservationIn]:
    """The filled-in vitals of one entry as observations; nothing if any value is implausible."""
    out: list[ObservationIn] = []
    for v in VITAL_SIGNS:
        raw = values.get(v.key, "").strip()
        if not raw:
            continue
        try:
            number = D(raw)
        except decimal.InvalidOperation:
            number = D("NaN")
        if not number.is_finite() or not v.low <= number <= v.high:
            span = f"{v.low}〜{v.high} {v.unit_label}"
            raise InvalidInput(
                f"{v.name_ja}の値 {raw} は入力できる範囲（{span}）の外です。",
                f"{v.name_en} {raw} is outside the plausible range {span}.",
                field=v.key,
            )
        out.append(
            ObservationIn(
                category="vital-signs",
                code=v.code,
                code_system="http://loinc.org",
                name=v.name_ja,
                value=str(number),
                unit=v.unit,
                ref_low=v.ref_low,
                ref_high=v.ref_high,
            )
        )
    if not out:
        raise InvalidInput(
            "バイタルを1つ以上入力してください。", "Enter at least one vital sign.", field="temp"
        )
    return out


VITAL_NAMES_EN = {v.code: v.name_en for v in VITAL_SIGNS}


def vital_name_en(code: str, name: str) -> str:
    """A vital sign's English name by its code (records keep the Japanese one)."""
    return VITAL_NAMES_EN.get(code, name)
