"""Our records as FHIR R4 resources shaped by JP Core (clinic-domain.md §2.1).

Each resource claims its JP Core profile in ``meta.profile``. Structure is checked in the tests
with ``fhir.resources`` (R4B models); JP Core's own rules that we rely on (IDE/SYL names, the
patient identifier system, coverage extensions, code-system URLs) are checked by our own tests,
because the HL7 validator and the JP Core packages cannot be fetched here.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from mamori.clinic.calendar import JST
from mamori.clinic.models import Clinic
from mamori.clinical.models import (
    AllergyIntolerance,
    Condition,
    Document,
    Encounter,
    MedicationRequest,
    Observation,
    ProgressNote,
)
from mamori.detection.models import ContactLog
from mamori.patients.models import Coverage, Patient

JP = "http://jpfhir.jp/fhir/core/StructureDefinition/"
JP_EXT = "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/"
PROFILES = {
    "Patient": JP + "JP_Patient",
    "Coverage": JP + "JP_Coverage",
    "Encounter": JP + "JP_Encounter",
    "Condition": JP + "JP_Condition",
    "MedicationRequest": JP + "JP_MedicationRequest",
    "AllergyIntolerance": JP + "JP_AllergyIntolerance",
    "Observation:laboratory": JP + "JP_Observation_LabResult",
    "Observation:vital-signs": JP + "JP_Observation_VitalSigns",
    "DocumentReference": JP + "JP_DocumentReference",
}
NAME_REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
PATIENT_ID_SYSTEM = "urn:oid:1.2.392.100495.20.3.51.1"  # + 10-digit 医療機関コード
INSURER_SYSTEM = "urn:oid:1.2.392.100495.20.3.61"
MEMBER_ID_SYSTEM = "http://jpfhir.jp/fhir/clins/Idsystem/JP_Insurance_memberID"
LOCAL = "urn:mamori:"
SYNTHETIC_DRUG_SYSTEM = "urn:mamori:synthetic:drug"


def _meta(profile_key: str, version: int) -> dict[str, Any]:
    return {"versionId": str(version), "profile": [PROFILES[profile_key]]}


def _ts(value: dt.datetime | None) -> str | None:
    return value.astimezone(JST).isoformat(timespec="seconds") if value else None


def _ref(kind: str, rid: object) -> dict[str, str]:
    return {"reference": f"{kind}/{rid}"}


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def patient(p: Patient, clinic: Clinic) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(p.id),
        "meta": _meta("Patient", p.version),
        "identifier": [
            {"system": PATIENT_ID_SYSTEM + clinic.institution_code, "value": str(p.patient_number)}
        ],
        "active": p.status == "active",
        "name": [
            {
                "extension": [{"url": NAME_REPRESENTATION, "valueCode": "IDE"}],
                "use": "official",
                "text": f"{p.family_name} {p.given_name}",
                "family": p.family_name,
                "given": [p.given_name],
            },
            {
                "extension": [{"url": NAME_REPRESENTATION, "valueCode": "SYL"}],
                "use": "official",
                "text": f"{p.family_kana} {p.given_kana}",
                "family": p.family_kana,
                "given": [p.given_kana],
            },
        ],
        "gender": p.sex,
        "birthDate": p.birth_date.isoformat(),
    }
    if p.phone:
        res["telecom"] = [{"system": "phone", "value": p.phone, "use": "home"}]
    if p.prefecture or p.city or p.address_line:
        addr: dict[str, Any] = {
            "use": "home",
            "country": "JP",
            "text": f"{p.prefecture}{p.city}{p.address_line}",
        }
        if p.postal_code:
            addr["postalCode"] = p.postal_code
        if p.prefecture:
            addr["state"] = p.prefecture
        if p.city:
            addr["city"] = p.city
        if p.address_line:
            addr["line"] = [p.address_line]
        res["address"] = [addr]
    if p.deceased_date:
        res["deceasedDateTime"] = p.deceased_date.isoformat()
    if p.merged_into_id:
        res["link"] = [{"other": _ref("Patient", p.merged_into_id), "type": "replaced-by"}]
    return res


_COVERAGE_TYPE = {
    "shaho": "1",
    "kokuho": "2",
    "kouki": "7",
    "kouhi": "8",
    "jihi": "9",
    "rousai": "5",
    "other": "0",
}


def coverage(c: Coverage) -> dict[str, Any]:
    ext = []
    if c.symbol:
        ext.append({"url": JP_EXT + "JP_Coverage_InsuredPersonSymbol", "valueString": c.symbol})
    if c.number:
        ext.append({"url": JP_EXT + "JP_Coverage_InsuredPersonNumber", "valueString": c.number})
    if c.branch:
        ext.append({"url": JP_EXT + "JP_Coverage_InsuredPersonSubNumber", "valueString": c.branch})
    res: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": str(c.id),
        "meta": _meta("Coverage", c.version),
        "status": "entered-in-error" if c.status == "entered-in-error" else "active",
        "type": {"coding": [_coding(LOCAL + "coverage-kind", c.kind)]},
        "subscriberId": c.number or None,
        "beneficiary": _ref("Patient", c.patient_id),
        "relationship": {
            "coding": [
                _coding(
                    "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
                    "self" if c.relationship == "self" else "other",
                )
            ]
        },
        "payor": [
            {
                "identifier": {
                    "system": INSURER_SYSTEM,
                    "value": c.insurer_number or c.public_payer_number or "jihi",
                }
            }
        ],
        "order": c.priority,
    }
    if ext:
        res["extension"] = ext
    if c.insurer_number:
        res["identifier"] = [
            {
                "system": MEMBER_ID_SYSTEM,
                "value": f"{c.insurer_number}:{c.symbol}:{c.number}:{c.branch}",
            }
        ]
    if c.branch:
        res["dependent"] = c.branch
    if c.valid_from or c.valid_to:
        res["period"] = {
            k: v.isoformat() for k, v in (("start", c.valid_from), ("end", c.valid_to)) if v
        }
    return {k: v for k, v in res.items() if v is not None}


_ENC_STATUS = {
    "planned": "planned",
    "arrived": "arrived",
    "in-progress": "in-progress",
    "billing": "finished",
    "finished": "finished",
    "cancelled": "cancelled",
    "entered-in-error": "entered-in-error",
}


def encounter(e: Encounter, clinic: Clinic) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": str(e.id),
        "meta": _meta("Encounter", e.version),
        "status": _ENC_STATUS.get(e.status, "unknown"),
        "class": _coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB", "ambulatory"),
        "type": [{"coding": [_coding(LOCAL + "visit-type", e.visit_type)]}],
        "subject": _ref("Patient", e.patient_id),
        "period": {
            k: v
            for k, v in (
                ("start", _ts(e.arrived_at) or e.visit_date.isoformat()),
                ("end", _ts(e.ended_at)),
            )
            if v
        },
        "serviceProvider": {"display": clinic.name},
    }
    if e.attending_id:
        res["participant"] = [{"individual": _ref("Practitioner", e.attending_id)}]
    return res


def condition(c: Condition) -> dict[str, Any]:
    codings = []
    if c.code and c.code_system:
        codings.append(_coding(c.code_system, c.code, c.display_name))
    if c.icd10:
        codings.append(
            _coding("http://jpfhir.jp/fhir/core/mhlw/CodeSystem/ICD10-2013-full", c.icd10)
        )
    clinical = (
        "active"
        if c.outcome == "continuing"
        else ("resolved" if c.outcome == "cured" else "inactive")
    )
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "id": str(c.id),
        "meta": _meta("Condition", c.version),
        "clinicalStatus": {
            "coding": [
                _coding("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical)
            ]
        },
        "verificationStatus": {
            "coding": [
                _coding(
                    "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "entered-in-error"
                    if c.status == "entered-in-error"
                    # a scribe's diagnosis not yet confirmed by a physician, or 疑い
                    else (
                        "unconfirmed"
                        if c.is_suspected or c.status == "unconfirmed"
                        else "confirmed"
                    ),
                )
            ]
        },
        "category": [
            {
                "coding": [
                    _coding(
                        "http://terminology.hl7.org/CodeSystem/condition-category",
                        "encounter-diagnosis",
                    )
                ]
            }
        ],
        "code": {"text": c.display_name, **({"coding": codings} if codings else {})},
        "subject": _ref("Patient", c.patient_id),
        "recordedDate": _ts(c.created_at),
    }
    if c.is_primary:
        res["extension"] = [{"url": LOCAL + "condition-primary", "valueBoolean": True}]
    tags = [
        t
        for t, on in (
            ("undisclosed", c.is_undisclosed),
            ("long-term", c.is_long_term),
            ("billing-only", c.is_billing_only),
        )
        if on
    ]
    if tags:
        res["meta"]["tag"] = [_coding(LOCAL + "condition-flag", t) for t in tags]
    if c.onset_date:
        res["onsetDateTime"] = c.onset_date.isoformat()
    if c.outcome_date:
        res["abatementDateTime"] = c.outcome_date.isoformat()
    if c.encounter_id:
        res["encounter"] = _ref("Encounter", c.encounter_id)
    return res


_MR_STATUS = {
    "draft": "draft",
    "active": "active",
    "completed": "completed",
    "cancelled": "cancelled",
    "entered-in-error": "entered-in-error",
}


def medication_requests(m: MedicationRequest) -> list[dict[str, Any]]:
    """One FHIR MedicationRequest per drug line; the prescription is the shared identifier and
    the RP number travels in an extension, as JP Core does."""
    out = []
    for group in m.rp_groups:
        for n, item in enumerate(group["items"], start=1):
            coding = (
                [
                    _coding(
                        item.get("code_system") or SYNTHETIC_DRUG_SYSTEM,
                        item.get("drug_code") or f"local-{item['drug_name']}",
                        item["drug_name"],
                    )
                ]
                if item.get("drug_code")
                else []
            )
            out.append(
                {
                    "resourceType": "MedicationRequest",
                    "id": f"{m.id}-{group['rp']}-{n}",
                    "meta": _meta("MedicationRequest", m.version),
                    "identifier": [
                        {"system": LOCAL + "prescription", "value": str(m.id)},
                        {"system": LOCAL + "rp-number", "value": str(group["rp"])},
                    ],
                    "status": _MR_STATUS.get(m.status, "unknown"),
                    "intent": "order",
                    "medicationCodeableConcept": {
                        "text": item["drug_name"],
                        **({"coding": coding} if coding else {}),
                    },
                    "subject": _ref("Patient", m.patient_id),
                    "authoredOn": m.issued_on.isoformat(),
                    "requester": _ref("Practitioner", m.prescriber_id),
                    "dosageInstruction": [
                        {
                            "text": (
                                f"{item['dose']}{item['unit']} {group['usage']} {group['days']}日分"
                            ),
                            "doseAndRate": [
                                {
                                    "doseQuantity": {
                                        "value": float(item["dose"]),
                                        "unit": item["unit"],
                                    }
                                }
                            ],
                        }
                    ],
                    "dispenseRequest": {
                        "expectedSupplyDuration": {
                            "value": group["days"],
                            "unit": "日",
                            "system": "http://unitsofmeasure.org",
                            "code": "d",
                        }
                    },
                    "substitution": {"allowedBoolean": not item.get("no_substitution", False)},
                    **({"encounter": _ref("Encounter", m.encounter_id)} if m.encounter_id else {}),
                }
            )
    return out


def allergy(a: AllergyIntolerance) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "id": str(a.id),
        "meta": _meta("AllergyIntolerance", a.version),
        "clinicalStatus": {
            "coding": [
                _coding(
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"
                )
            ]
        },
        "verificationStatus": {
            "coding": [
                _coding(
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "entered-in-error" if a.status == "entered-in-error" else a.verification,
                )
            ]
        },
        "category": [a.category],
        "criticality": "high" if a.is_contraindication else "low",
        "code": {"text": a.substance},
        "patient": _ref("Patient", a.patient_id),
        "recordedDate": _ts(a.created_at),
    }
    if a.substance_code and a.code_system:
        res["code"]["coding"] = [_coding(a.code_system, a.substance_code, a.substance)]
    if a.reaction:
        sev = {"severity": a.severity} if a.severity else {}
        res["reaction"] = [{"manifestation": [{"text": a.reaction}], **sev}]
    if a.onset_date:
        res["onsetDateTime"] = a.onset_date.isoformat()
    return res


def observation(o: Observation) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": str(o.id),
        "meta": _meta(f"Observation:{o.category}", o.version),
        "status": "entered-in-error" if o.status == "entered-in-error" else "final",
        "category": [
            {
                "coding": [
                    _coding(
                        "http://terminology.hl7.org/CodeSystem/observation-category", o.category
                    )
                ]
            }
        ],
        "code": {
            "text": o.name,
            "coding": [_coding(o.code_system or LOCAL + "observation", o.code, o.name)],
        },
        "subject": _ref("Patient", o.patient_id),
        "effectiveDateTime": _ts(o.effective_at),
    }
    if o.value:
        res["valueQuantity"] = {
            "value": float(o.value),
            "unit": o.unit,
            "system": "http://unitsofmeasure.org",
            "code": o.unit,
        }
    else:
        res["valueString"] = o.value_text
    if o.ref_low or o.ref_high:
        rng: dict[str, Any] = {}
        if o.ref_low:
            rng["low"] = {"value": float(o.ref_low), "unit": o.unit}
        if o.ref_high:
            rng["high"] = {"value": float(o.ref_high), "unit": o.unit}
        res["referenceRange"] = [rng]
    if o.abnormal_flag:
        res["interpretation"] = [
            {
                "coding": [
                    _coding(
                        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        o.abnormal_flag,
                    )
                ]
            }
        ]
    if o.encounter_id:
        res["encounter"] = _ref("Encounter", o.encounter_id)
    return res


def document(d: Document) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": str(d.id),
        "meta": _meta("DocumentReference", d.version),
        "status": "entered-in-error" if d.status == "entered-in-error" else "current",
        "type": {"coding": [_coding(LOCAL + "document-type", d.doc_type)], "text": d.title},
        "subject": _ref("Patient", d.patient_id),
        "date": _ts(d.created_at),
        "description": d.title,
        "content": [
            {
                "attachment": {
                    "contentType": d.mime_type,
                    "size": d.size_bytes,
                    "hash": base64.b64encode(bytes.fromhex(d.sha256)).decode("ascii"),
                    "url": f"/api/v1/documents/{d.id}/content",
                    "title": d.title,
                    "creation": d.document_date.isoformat(),
                }
            }
        ],
    }


def note(n: ProgressNote) -> dict[str, Any]:
    """A progress note as a DocumentReference with its text inline (JP Core has no SOAP
    profile); the LOINC type tells nursing from physician notes."""
    text = "\n".join(
        f"{k}: {v}"
        for k, v in (("S", n.subjective), ("O", n.objective), ("A", n.assessment), ("P", n.plan))
        if v
    )
    status = {
        "draft": "preliminary",
        "final": "final",
        "amended": "amended",
        "entered-in-error": "entered-in-error",
    }[n.status]
    return {
        "resourceType": "DocumentReference",
        "id": str(n.id),
        "meta": _meta("DocumentReference", n.version),
        "status": "entered-in-error" if n.status == "entered-in-error" else "current",
        "docStatus": status,
        "type": {
            "coding": [_coding("http://loinc.org", "34746-8" if n.kind == "nursing" else "11506-3")]
        },
        "subject": _ref("Patient", n.patient_id),
        "date": _ts(n.updated_at),
        "author": [_ref("Practitioner", n.author_id)],
        **({"authenticator": _ref("Practitioner", n.finalised_by_id)} if n.finalised_by_id else {}),
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(text.encode("utf-8")).decode(),
                }
            }
        ],
        **(
            {"context": {"encounter": [_ref("Encounter", n.encounter_id)]}}
            if n.encounter_id
            else {}
        ),
    }


PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
_MEDIUM = {"phone": ("PHONE", "電話"), "desk": ("FACE", "窓口"), "message": ("WRITTEN", "伝言")}


def contact(c: ContactLog) -> dict[str, Any]:
    """電話対応 (a call, desk question or message about the patient, logged at the desk) as a
    Communication: when, how (v3 ParticipationMode), the topic and the note. JP Core has no
    Communication profile, so none is claimed."""
    code, label = _MEDIUM.get(c.channel, ("", c.channel))
    return {
        "resourceType": "Communication",
        "id": str(c.id),
        "meta": {"versionId": str(c.version)},
        "status": "entered-in-error" if c.status == "entered-in-error" else "completed",
        "subject": _ref("Patient", c.patient_id),
        "sent": _ts(c.created_at),
        "medium": [
            {"coding": [_coding(PARTICIPATION_MODE, code, label)], "text": label}
            if code
            else {"text": label}
        ],
        "topic": {"text": c.topic},
        **({"payload": [{"contentString": c.note}]} if c.note else {}),
    }
