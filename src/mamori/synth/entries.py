"""The clinical records of a synthetic visit: notes, vitals, laboratory results, prescriptions
and documents, queued on the bulk writer with the seeded random source (same seed, same bytes)."""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from typing import Any

from mamori.clinical.models import (
    Document,
    MedicationRequest,
    Observation,
    ProgressNote,
)
from mamori.clinical.service import abnormal_flag
from mamori.documents.store import DocumentStore
from mamori.patients.kana import search_key
from mamori.records.bulk import BulkWriter
from mamori.records.versioning import ChangeKind
from mamori.synth import vocab
from mamori.synth.population import SYNTHETIC_MARK, PatientState, Staff
from mamori.synth.vocab import Dx


class ClinicalEntries:
    """Mixin of :class:`~mamori.synth.generator.Generator`: one visit's clinical entries."""

    rng: random.Random
    bulk: BulkWriter
    staff: Staff
    store: DocumentStore | None

    def _note_text(self, dxs: list[Dx], first: bool) -> dict[str, str]:
        r = self.rng
        target = int(min(2000, max(40, r.lognormvariate(math.log(200 if first else 120), 0.7))))
        s = " ".join(r.choice(d.s) for d in dxs)
        o = " ".join(r.choice(d.o) for d in dxs)
        a = " ".join(d.a for d in dxs)
        p = " ".join(r.choice(d.p) for d in dxs)
        while len(s) + len(o) + len(a) + len(p) < target:
            s += r.choice(vocab.FILLER)
        return {"subjective": s, "objective": o, "assessment": a, "plan": p + SYNTHETIC_MARK}

    def _vitals(
        self, st: PatientState, enc: dict[str, Any], at: dt.datetime, by: uuid.UUID, acute: bool
    ) -> None:
        r = self.rng
        values: dict[str, str] = {
            "sbp": str(int(r.gauss(138 if st.chronic else 122, 12))),
            "dbp": str(int(r.gauss(82, 9))),
            "pulse": str(int(r.gauss(74, 9))),
        }
        if acute:
            values = {
                "temp": f"{r.gauss(37.4, 0.6):.1f}",
                "pulse": values["pulse"],
                "spo2": str(min(100, int(r.gauss(97.5, 1.2)))),
            }
        elif r.random() < 0.3:
            values["weight"] = f"{r.gauss(62, 11):.1f}"
        for key, value in values.items():
            code, name, unit, low, high = vocab.VITALS[key]
            self._observation(
                st, enc, "vital-signs", code, vocab.LOINC, name, value, unit, low, high, at, by
            )

    def _observation(
        self,
        st: PatientState,
        enc: dict[str, Any],
        category: str,
        code: str,
        system: str,
        name: str,
        value: str,
        unit: str,
        low: str,
        high: str,
        at: dt.datetime,
        by: uuid.UUID,
    ) -> None:

        self.bulk.add(
            Observation,
            {
                "patient_id": st.row["id"],
                "encounter_id": enc["id"],
                "category": category,
                "code": code,
                "code_system": system,
                "name": name,
                "value": value,
                "value_text": "",
                "unit": unit,
                "ref_low": low,
                "ref_high": high,
                "abnormal_flag": abnormal_flag(value, low, high),
                "effective_at": at,
                "status": "final",
            },
            by=by,
            at=at,
        )

    def _labs(self, st: PatientState, enc: dict[str, Any], at: dt.datetime, by: uuid.UUID) -> None:
        diabetic = any(d.icd10.startswith("E11") for d in st.chronic)
        for lab in vocab.LABS:
            mean = lab.mean
            if diabetic and lab.code in ("HBA1C", "GLU"):
                mean *= 1.2
            v = max(lab.mean * 0.2, self.rng.gauss(mean + st.lab_offset * lab.sd, lab.sd * 0.6))
            value = f"{v:.{lab.digits}f}"
            self._observation(
                st,
                enc,
                "laboratory",
                lab.code,
                vocab.LAB_SYSTEM,
                lab.name,
                value,
                lab.unit,
                lab.low,
                lab.high,
                at,
                by,
            )

    def _prescribe(
        self,
        st: PatientState,
        enc: dict[str, Any],
        dxs: list[Dx],
        day: dt.date,
        at: dt.datetime,
        by: uuid.UUID,
    ) -> None:
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for d in dxs:
            for drug in d.drugs:
                if any(search_key(a) in search_key(drug.name) for a in st.allergens):
                    continue  # the generator respects its own 薬剤禁忌, like a careful doctor
                groups.setdefault((drug.usage, d.days), []).append(
                    {
                        "drug_name": drug.name,
                        "drug_code": "",
                        "code_system": vocab.DRUG_SYSTEM,
                        "dose": drug.dose,
                        "unit": drug.unit,
                        "per": drug.per,
                        "generic": True,
                        "no_substitution": False,
                        "comment": "",
                    }
                )
        if not groups:
            return
        rp = [
            {"rp": i, "usage": usage, "days": days, "items": items}
            for i, ((usage, days), items) in enumerate(groups.items(), start=1)
        ]
        self.bulk.add(
            MedicationRequest,
            {
                "patient_id": st.row["id"],
                "encounter_id": enc["id"],
                "prescriber_id": by,
                "issued_on": day,
                "dispensing": "outside",
                "refill_count": 0,
                "rp_groups": rp,
                "status": "active",
            },
            by=by,
            at=at,
        )

    def _note(
        self,
        st: PatientState,
        enc: dict[str, Any],
        dxs: list[Dx],
        first: bool,
        at: dt.datetime,
        doctor: uuid.UUID,
    ) -> None:
        r = self.rng
        typist = doctor
        proxy = bool(self.staff.scribes) and r.random() < 0.05
        if proxy:
            typist = r.choice(self.staff.scribes)
        text = self._note_text(dxs, first)
        note = self.bulk.add(
            ProgressNote,
            {
                "patient_id": st.row["id"],
                "encounter_id": enc["id"],
                "kind": "soap",
                **text,
                "author_id": doctor,
                "entered_by_id": typist,
                "is_proxy_entry": proxy,
                "finalised_by_id": None,
                "finalised_at": None,
                "status": "draft",
            },
            by=typist,
            at=at,
        )
        signed = at + dt.timedelta(minutes=r.randint(2, 40))
        self.bulk.revise(
            ProgressNote,
            note,
            ChangeKind.CONFIRMED if proxy else ChangeKind.FINALISED,
            by=doctor,
            at=signed,
            status="final",
            finalised_by_id=doctor,
            finalised_at=signed,
        )
        if r.random() < 0.1:
            nurse = r.choice(self.staff.nurses)
            self.bulk.add(
                ProgressNote,
                {
                    "patient_id": st.row["id"],
                    "encounter_id": enc["id"],
                    "kind": "nursing",
                    "subjective": "",
                    "objective": r.choice(vocab.FILLER),
                    "assessment": "",
                    "plan": "次回受診時に確認。" + SYNTHETIC_MARK,
                    "author_id": nurse,
                    "entered_by_id": nurse,
                    "is_proxy_entry": False,
                    "finalised_by_id": nurse,
                    "finalised_at": at,
                    "status": "final",
                },
                by=nurse,
                at=at,
            )

    def _document(
        self, st: PatientState, enc: dict[str, Any], day: dt.date, at: dt.datetime, by: uuid.UUID
    ) -> None:
        if self.store is None:
            return
        title = self.rng.choice(["診療情報提供書", "検査報告書", "返書", "健診結果"])
        body = (
            f"{title}\n{SYNTHETIC_MARK}（実在の人物とは関係ありません）\n患者番号 "
            f"{st.row['patient_number']}\n作成日 {day.isoformat()}\n"
        ).encode()
        digest = self.store.put(body)
        self.bulk.add(
            Document,
            {
                "patient_id": st.row["id"],
                "encounter_id": enc["id"],
                "doc_type": "referral" if "提供" in title else "report",
                "direction": "in",
                "title": title + "（合成）",
                "document_date": day,
                "mime_type": "text/plain",
                "size_bytes": len(body),
                "sha256": digest,
                "status": "active",
            },
            by=by,
            at=at,
        )
