"""FHIR R4 (JP Core-shaped) output: every exported resource parses with fhir.resources (R4B
models) and carries the JP Core profile and the JP Core details we rely on."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from tests.conftest import World

from mamori.clinic.models import Clinic
from mamori.documents.store import DocumentStore
from mamori.errors import Forbidden
from mamori.fhir import mapping
from mamori.fhir.bulk import RESOURCE_TYPES, export_ndjson
from mamori.synth.generator import generate

JP = "http://jpfhir.jp/fhir/core/StructureDefinition/"
EXPECTED_PROFILE = {
    "Patient": {JP + "JP_Patient"},
    "Coverage": {JP + "JP_Coverage"},
    "Encounter": {JP + "JP_Encounter"},
    "Condition": {JP + "JP_Condition"},
    "MedicationRequest": {JP + "JP_MedicationRequest"},
    "AllergyIntolerance": {JP + "JP_AllergyIntolerance"},
    "Observation": {JP + "JP_Observation_LabResult", JP + "JP_Observation_VitalSigns"},
    "DocumentReference": {JP + "JP_DocumentReference"},
    "Communication": set(),  # 電話対応: JP Core has no Communication profile
}


@pytest.fixture
def synthetic(world: World) -> World:
    with world.db.session(write=True) as s:
        clinic = s.get(Clinic, world.actors["dr_aiko"].clinic_id)
        assert clinic is not None
        generate(
            s, clinic, "XS", seed=3, store=DocumentStore(world.settings.documents_dir, world.db)
        )
        s.commit()
    return world


def _check_jp_core(res: dict[str, Any]) -> None:
    rtype = res["resourceType"]
    assert set(res["meta"].get("profile", [])) <= EXPECTED_PROFILE[rtype]
    if rtype == "Communication":
        assert res["subject"]["reference"].startswith("Patient/") and res["topic"]["text"]
        assert res["medium"][0]["coding"][0]["code"] in ("PHONE", "FACE", "WRITTEN")
    if rtype == "Patient":
        reps = [n["extension"][0]["valueCode"] for n in res["name"]]
        assert reps == ["IDE", "SYL"]
        assert res["identifier"][0]["system"] == mapping.PATIENT_ID_SYSTEM + "1310123455"
        if "address" in res:
            assert res["address"][0]["text"].startswith(res["address"][0]["state"])
    if rtype == "Coverage" and res["type"]["coding"][0]["code"] in ("shaho", "kokuho", "kouki"):
        urls = {e["url"] for e in res.get("extension", [])}
        assert mapping.JP_EXT + "JP_Coverage_InsuredPersonNumber" in urls
        assert res["identifier"][0]["system"] == mapping.MEMBER_ID_SYSTEM
        assert res["identifier"][0]["value"].count(":") == 3
    if rtype == "Encounter":
        assert res["class"]["code"] == "AMB"
    if rtype == "Observation" and "valueQuantity" in res:
        assert res["valueQuantity"]["unit"]


def test_bulk_export_parses_with_fhir_resources(synthetic: World, tmp_path: Path) -> None:
    # physicians request bulk exports; the director runs them
    with synthetic.db.session(write=False) as s, pytest.raises(Forbidden):
        export_ndjson(s, synthetic.actors["dr_aiko"], tmp_path, reauth_minutes=5)
    actor = dataclasses.replace(synthetic.actors["director"], channel="cli")
    with synthetic.db.session(write=False) as s:
        counts = export_ndjson(s, actor, tmp_path, reauth_minutes=5)
    assert set(counts) == {*RESOURCE_TYPES, "restricted"} and counts["restricted"] == 0
    assert all(counts[t] > 0 for t in RESOURCE_TYPES), counts
    parsed = 0
    for rtype in RESOURCE_TYPES:
        lines = (tmp_path / f"{rtype}.ndjson").read_text(encoding="utf-8").splitlines()
        assert len(lines) == counts[rtype]
        model = get_fhir_model_class(rtype)
        for line in lines:
            res = json.loads(line)
            model.model_validate(res)  # raises on any structural error
            _check_jp_core(res)
            parsed += 1
    assert parsed == sum(v for k, v in counts.items() if k != "restricted")
    assert not list(tmp_path.glob(".*.partial"))


def test_bulk_export_in_worker_processes_is_the_same_and_leaves_restricted_patients_out(
    synthetic: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of patients in two worker processes give byte for byte the files one process
    writes; a restricted patient (no break-the-glass) is left out and counted; every exported
    patient is named by one of the chunks' audit events."""
    from sqlalchemy import select

    from mamori.audit.models import AuditEvent
    from mamori.fhir import bulk

    monkeypatch.setattr(bulk, "CHUNK", 7)  # several chunks even in a small clinic
    director = synthetic.actors["director"]
    with synthetic.db.session(write=False) as s:
        ids = bulk.patient_ids(s, director)
    hidden = str(ids[3])
    r = synthetic.http.put(
        f"/api/v1/patients/{hidden}/restriction",
        json={"vip": True, "sensitive": False},
        headers=synthetic.h("director"),
    )
    assert r.status_code == 200, r.text
    actor = dataclasses.replace(director, channel="cli")
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        with synthetic.db.session(write=False) as s:
            counts = bulk.export_ndjson(
                s, actor, out, reauth_minutes=5, home=synthetic.settings.home, workers=workers
            )
            s.commit()
        assert counts["restricted"] == 1
        outputs[workers] = {t: (out / f"{t}.ndjson").read_bytes() for t in RESOURCE_TYPES}
    assert outputs[1] == outputs[2]
    exported = {json.loads(line)["id"] for line in outputs[2]["Patient"].splitlines()}
    assert hidden not in exported and len(exported) == len(ids) - 1
    with synthetic.db.session(write=False) as s:
        events = [
            json.loads(bytes(b))
            for b in s.scalars(
                select(AuditEvent.body).where(AuditEvent.tag == "patient:data:exported")
            )
        ]
    named = {p for e in events if e["detail"]["what"] == "fhir:bulk" for p in e["patients"]}
    assert named == exported


def test_fhir_api_read_search_and_everything(synthetic: World) -> None:
    h = synthetic.h("dr_aiko")
    meta = synthetic.http.get("/fhir/r4/metadata")
    assert meta.status_code == 200 and meta.json()["fhirVersion"] == "4.0.1"
    get_fhir_model_class("CapabilityStatement").model_validate(meta.json())
    found = synthetic.http.get("/fhir/r4/Patient", params={"name": "ｻｶ"}, headers=h)
    assert found.headers["content-type"].startswith("application/fhir+json")
    bundle = found.json()
    get_fhir_model_class("Bundle").model_validate(bundle)
    assert bundle["total"] >= 1
    assert all(e["resource"]["name"][1]["family"].startswith("サカ") for e in bundle["entry"])
    patient = bundle["entry"][0]["resource"]
    by_id = synthetic.http.get(
        "/fhir/r4/Patient",
        headers=h,
        params={
            "identifier": f"{patient['identifier'][0]['system']}|"
            f"{patient['identifier'][0]['value']}",
            "birthdate": patient["birthDate"],
        },
    ).json()
    assert [e["resource"]["id"] for e in by_id["entry"]] == [patient["id"]]
    everything = synthetic.http.get(
        f"/fhir/r4/Patient/{patient['id']}/$everything", headers=h
    ).json()
    get_fhir_model_class("Bundle").model_validate(everything)
    types = {e["resource"]["resourceType"] for e in everything["entry"]}
    assert {"Patient", "Coverage", "Encounter", "Observation"} <= types
    for e in everything["entry"]:
        res = e["resource"]
        assert (
            synthetic.http.get(f"/fhir/r4/{res['resourceType']}/{res['id']}", headers=h).json()
            == res
        )
        if res["resourceType"] != "Patient":
            ref = res.get("subject") or res.get("patient") or res.get("beneficiary")
            assert ref == {"reference": f"Patient/{patient['id']}"}
    by_patient = synthetic.http.get(
        "/fhir/r4/Observation", params={"patient": patient["id"]}, headers=h
    ).json()
    assert by_patient["total"] == sum(
        1 for e in everything["entry"] if e["resource"]["resourceType"] == "Observation"
    )


def test_fhir_errors_are_operation_outcomes(synthetic: World) -> None:
    h = synthetic.h("dr_chen")
    with synthetic.db.session(write=False) as s:
        from sqlalchemy import select

        from mamori.patients.models import Patient

        pid = s.scalars(select(Patient.id).limit(1)).one()
    for path in (
        f"/fhir/r4/Patient/{pid}",
        f"/fhir/r4/Patient/{pid}/$everything",
        f"/fhir/r4/Observation?patient={pid}",
        "/fhir/r4/Basic/1",
        "/fhir/r4/Patient/not-a-uuid",
    ):
        r = synthetic.http.get(path, headers=h)
        assert r.status_code == 404, path
        body = r.json()
        assert body["resourceType"] == "OperationOutcome"
        get_fhir_model_class("OperationOutcome").model_validate(body)
    r = synthetic.http.get("/fhir/r4/Patient", params={"birthdate": "1990-13-01"}, headers=h)
    assert r.status_code == 422 and r.json()["resourceType"] == "OperationOutcome"
    assert synthetic.http.get(f"/fhir/r4/Patient/{pid}").status_code == 401


def test_fhir_read_tells_nothing_of_another_clinics_records(synthetic: World) -> None:
    """Another clinic's existing record and an ID that exists nowhere get the same answer:
    404 for a role that may read the type, 403 for one that may not — decided before anything
    is looked up."""
    import uuid

    from sqlalchemy import select

    from mamori.clinical.models import Observation, ProgressNote

    with synthetic.db.session(write=False) as s:
        obs = s.scalars(select(Observation.id).limit(1)).one()  # clinic A's
        note = s.scalars(select(ProgressNote.id).limit(1)).one()
    for rtype, existing in (("Observation", obs), ("DocumentReference", note)):
        answers = {}
        for rid in (existing, uuid.uuid4()):
            r = synthetic.http.get(f"/fhir/r4/{rtype}/{rid}", headers=synthetic.h("dr_chen"))
            answers[rid == existing] = (r.status_code, r.json()["issue"][0]["code"])
        assert answers[True] == answers[False] and answers[True][0] == 404, (rtype, answers)
    # reception may not read observations: refused alike, here, elsewhere or nowhere
    own = synthetic.http.get(f"/fhir/r4/Observation/{obs}", headers=synthetic.h("clerk_chika"))
    none = synthetic.http.get(
        f"/fhir/r4/Observation/{uuid.uuid4()}", headers=synthetic.h("clerk_chika")
    )
    assert own.status_code == none.status_code == 403
    # the physician of clinic A still reads it
    r = synthetic.http.get(f"/fhir/r4/Observation/{obs}", headers=synthetic.h("dr_aiko"))
    assert r.status_code == 200 and r.json()["id"] == str(obs)
