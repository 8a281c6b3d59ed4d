"""What a clinic prints for others to read: the 院外処方箋 a pharmacy dispenses from and the
診療情報提供書 another physician reads. Each print or letter is an audit event; each refuses
what it must not print."""

from __future__ import annotations

import io
import json
from typing import Any

from pypdf import PdfReader
from sqlalchemy import select
from tests.conftest import World

from mamori.audit.models import AuditEvent

COVERAGE = {
    "kind": "shaho",
    "insurer_number": "06132013",
    "symbol": "ミツ",
    "number": "187",
    "branch": "01",
    "relationship": "family",
    "copay_percent": 30,
}
KOUHI = {
    "kind": "kouhi",
    "public_payer_number": "54136015",
    "recipient_number": "1234566",
    "priority": 2,
}
RX = {
    "rp_groups": [
        {
            "usage": "1日2回 朝夕食後",
            "days": 28,
            "items": [
                {"drug_name": "アムロジピン錠5mg", "dose": "1", "unit": "錠", "per": "dose"},
                {
                    "drug_name": "メトホルミン塩酸塩錠250mg",
                    "dose": "2",
                    "unit": "錠",
                    "per": "dose",
                    "no_substitution": True,
                },
            ],
        },
        {
            "usage": "発熱時頓用",
            "days": 5,
            "items": [
                {
                    "drug_name": "アセトアミノフェン錠200mg",
                    "dose": "2",
                    "unit": "錠",
                    "per": "dose",
                    "generic": True,
                }
            ],
        },
    ]
}


def _text(pdf: bytes) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)


def _events(world: World, tag: str) -> list[dict[str, Any]]:
    with world.db.session(write=False) as s:
        rows = s.scalars(select(AuditEvent).where(AuditEvent.tag == tag)).all()
        return [json.loads(r.body) for r in rows]


def test_an_issued_outside_prescription_prints_as_the_standard_sheet(
    world: World, patient: dict[str, Any]
) -> None:
    pid = patient["id"]
    for cov in (COVERAGE, KOUHI):
        r = world.http.post(
            f"/api/v1/patients/{pid}/coverages", json=cov, headers=world.h("clerk_chika")
        )
        assert r.status_code == 201, r.text
    r = world.http.post(
        f"/api/v1/patients/{pid}/medication-requests", json=RX, headers=world.h("dr_aiko")
    )
    assert r.status_code == 201, r.text
    rx = r.json()["medication_request"]
    r = world.http.get(
        f"/api/v1/medication-requests/{rx['id']}/prescription.pdf", headers=world.h("nurse_ben")
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", r.text
    text = _text(r.content)
    for expected in (
        "処　方　箋",
        "山田 花子",
        "昭和23年4月3日",
        "女",
        "06132013",  # 保険者番号
        "ミツ・187（枝番）01",
        "被扶養者",
        "負担割合 3割",
        "54136015",  # 公費負担者番号
        "1234566",  # 受給者番号
        "まもり内科",
        "山本 愛子",  # the prescriber, not the nurse who printed it
        "アムロジピン錠5mg　1錠/回",
        "1日2回 朝夕食後　28日分",
        "【般】アセトアミノフェン錠200mg　2錠/回",
        "発熱時頓用　5回分",
        "以下余白",
        "交付の日を含めて",
        "医療機関コード",
    ):
        assert expected in text, expected
    # the 変更不可 mark stands on the locked drug's line, and the prescriber signs for it
    lines = text.splitlines()
    locked = [ln for ln in lines if "メトホルミン" in ln]
    assert locked and "✓" in "".join(lines), lines
    assert "保険医署名　山本 愛子" in text
    # the print is its own audit event, naming the prescription and its version
    printed = _events(world, "patient:prescription:printed")
    assert len(printed) == 1
    assert printed[0]["detail"] == {"what": "MedicationRequest", "id": rx["id"], "version": 1}
    assert printed[0]["patients"] == [pid]
    assert printed[0]["actor"]["role"] == "nurse"


def test_a_draft_an_inside_or_another_clinics_prescription_has_no_sheet(
    world: World, patient: dict[str, Any]
) -> None:
    pid = patient["id"]
    draft = world.http.post(
        f"/api/v1/patients/{pid}/medication-requests", json=RX, headers=world.h("nurse_ben")
    ).json()["medication_request"]
    inside = world.http.post(
        f"/api/v1/patients/{pid}/medication-requests",
        json={**RX, "dispensing": "inside"},
        headers=world.h("dr_aiko"),
    ).json()["medication_request"]
    for rx, code in ((draft, "prescription_not_issued"), (inside, "not_outside_prescription")):
        r = world.http.get(
            f"/api/v1/medication-requests/{rx['id']}/prescription.pdf",
            headers=world.h("dr_aiko"),
        )
        assert r.status_code == 409 and r.json()["error"]["code"] == code, r.text
    issued = world.http.post(
        f"/api/v1/patients/{pid}/medication-requests", json=RX, headers=world.h("dr_aiko")
    ).json()["medication_request"]
    url = f"/api/v1/medication-requests/{issued['id']}/prescription.pdf"
    assert world.http.get(url, headers=world.h("dr_chen")).status_code == 404  # other clinic
    assert world.http.get(url, headers=world.h("clerk_chika")).status_code == 403
    assert world.http.get(url, headers=world.h("scribe_dai")).status_code == 403
    assert _events(world, "patient:prescription:printed") == []


def test_printing_a_chart_summary_is_recorded_as_a_print(
    world: World, patient: dict[str, Any]
) -> None:
    r = world.http.get(f"/api/v1/patients/{patient['id']}/chart.pdf", headers=world.h("dr_aiko"))
    assert r.status_code == 200
    printed = _events(world, "patient:chart:printed")
    assert len(printed) == 1 and printed[0]["patients"] == [patient["id"]]
    world.http.get(f"/api/v1/patients/{patient['id']}/chart", headers=world.h("dr_aiko"))
    assert len(_events(world, "patient:chart:printed")) == 1  # viewing is not printing


LETTER = {
    "to_institution": "東京市立総合病院",
    "to_department": "循環器内科",
    "to_physician": "中村 一郎",
    "purpose": "労作時胸痛の精査をお願いいたします。",
}


def test_a_referral_letter_is_drafted_from_the_chart_signed_printed_and_kept(
    world: World, patient: dict[str, Any]
) -> None:
    pid, h = patient["id"], world.h("dr_aiko")
    for cond in (
        {
            "display_name": "高血圧症",
            "icd10": "I10",
            "is_primary": True,
            "onset_date": "2020-04-01",
        },
        {"display_name": "狭心症", "icd10": "I20.9", "is_suspected": True},
        {
            "display_name": "急性上気道炎",
            "outcome": "cured",
            "outcome_date": "2026-01-10",
            "onset_date": "2026-01-05",
        },
    ):
        r = world.http.post(f"/api/v1/patients/{pid}/conditions", json=cond, headers=h)
        assert r.status_code == 201, r.text
    world.http.post(
        f"/api/v1/patients/{pid}/allergies",
        json={
            "category": "medication",
            "substance": "ペニシリン",
            "is_contraindication": True,
            "reaction": "発疹",
        },
        headers=h,
    )
    world.http.post(f"/api/v1/patients/{pid}/medication-requests", json=RX, headers=h)
    world.http.post(  # a nurse's draft order is not yet a prescription: not in the letter
        f"/api/v1/patients/{pid}/medication-requests",
        json={
            "rp_groups": [
                {
                    "usage": "就寝前",
                    "days": 7,
                    "items": [{"drug_name": "ゾルピデム錠5mg", "dose": "1", "unit": "錠"}],
                }
            ]
        },
        headers=world.h("nurse_ben"),
    )
    world.http.post(
        f"/api/v1/patients/{pid}/observations",
        json={
            "category": "laboratory",
            "code": "4548-4",
            "name": "HbA1c",
            "value": "7.4",
            "unit": "%",
            "ref_low": "4.6",
            "ref_high": "6.2",
        },
        headers=h,
    )
    note = world.http.post(
        f"/api/v1/patients/{pid}/notes",
        json={"subjective": "胸痛", "assessment": "狭心症疑い", "plan": "循環器内科へ紹介"},
        headers=h,
    ).json()
    world.http.post(f"/api/v1/notes/{note['id']}/finalise", json={"expected_version": 1}, headers=h)
    r = world.http.get(f"/api/v1/patients/{pid}/referrals/draft", headers=h)
    assert r.status_code == 200, r.text
    draft = r.json()
    assert draft["diagnoses"].splitlines()[0].startswith("高血圧症（主病）")
    assert "狭心症（疑い）" in draft["diagnoses"] and "急性上気道炎" not in draft["diagnoses"]
    assert "急性上気道炎" in draft["history"]  # ended: past history
    assert "Rp1 アムロジピン錠5mg 1錠/回" in draft["medications"]
    assert "ゾルピデム" not in draft["medications"]
    assert draft["allergies"] == "ペニシリン（薬剤禁忌）: 発疹"
    assert "HbA1c 7.4 %（H）" in draft["course"]
    assert draft["treatment"] == "A: 狭心症疑い\nP: 循環器内科へ紹介"
    body = {**LETTER, **draft, "remarks": "ご多忙中恐縮ですが、よろしくお願いいたします。"}
    r = world.http.post(f"/api/v1/patients/{pid}/referrals", json=body, headers=h)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["doc_type"] == "referral" and doc["direction"] == "out"
    assert doc["title"] == "診療情報提供書（東京市立総合病院 循環器内科）"
    # the stored letter is the PDF, read back through the document service
    pdf = world.http.get(f"/api/v1/documents/{doc['id']}/content", headers=h)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    text = _text(pdf.content)
    for expected in (
        "診療情報提供書",
        "東京市立総合病院 循環器内科",
        "中村 一郎 先生 御侍史",
        "まもり内科",
        "医師 山本 愛子 印",
        "山田 花子",
        "昭和23年4月3日",
        "労作時胸痛の精査",
        "高血圧症（主病）",
        "ペニシリン（薬剤禁忌）: 発疹",
        "既往歴及び家族歴",
    ):
        assert expected in text, expected
    # only a physician writes one; another clinic's patient is not there
    for who, status in (
        ("nurse_ben", 403),
        ("scribe_dai", 403),
        ("clerk_chika", 403),
        ("dr_chen", 404),
    ):
        r = world.http.post(f"/api/v1/patients/{pid}/referrals", json=LETTER, headers=world.h(who))
        assert r.status_code == status, (who, r.text)
    r = world.http.post(
        f"/api/v1/patients/{pid}/referrals", json={**LETTER, "purpose": ""}, headers=h
    )
    assert r.status_code == 422
    docs = world.http.get(f"/api/v1/patients/{pid}/documents", headers=h).json()
    assert [d["id"] for d in docs] == [doc["id"]]  # refusals left nothing behind
