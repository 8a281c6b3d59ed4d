"""The audit log as FHIR R4 AuditEvent resources shaped by IHE BALP (Basic Audit Log Patterns),
for SIEMs and regional networks. Minimal pattern: identifiers, never content."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.audit.models import AuditEvent
from mamori.clinic.calendar import JST

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
_REST = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
_INTERACTION = "http://hl7.org/fhir/restful-interaction"


def _shape(tag: str) -> tuple[str, str, str]:
    """(action code, RESTful interaction, BALP profile) for a tag."""
    if tag == "patient:list:viewed":
        return "E", "search-type", "IHE.BasicAudit.PatientQuery"
    if tag.startswith("patient:"):
        return "R", "read", "IHE.BasicAudit.PatientRead"
    if tag == "record:created":
        return "C", "create", "IHE.BasicAudit.PatientCreate"
    if tag == "record:entered-in-error":
        return "D", "delete", "IHE.BasicAudit.PatientDelete"
    if tag.startswith("record:"):
        return "U", "update", "IHE.BasicAudit.PatientUpdate"
    return "E", "operation", ""


def to_audit_event(seq: int, body: dict[str, Any], instance_id: str) -> dict[str, Any]:
    action, interaction, profile = _shape(body["tag"])
    who = body.get("actor", {})
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP" if who.get("user") else "CST",
                }
            ]
        },
        "who": {"identifier": {"system": "urn:mamori:staff", "value": who.get("user") or "system"}},
        "requestor": bool(who.get("user")),
        "role": [{"text": who.get("role", "system")}],
    }
    if who.get("ip"):
        agent["network"] = {"address": who["ip"], "type": "2"}
    entities: list[dict[str, Any]] = [
        {
            "what": {"reference": f"Patient/{p}"},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "1",
            },
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
        }
        for p in body.get("patients", [])
    ]
    for r in body.get("records", []):
        entities.append(
            {
                "what": {"reference": f"{r['type']}/{r['id']}/_history/{r['version']}"},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                },
                "detail": [{"type": "content-sha256", "valueString": r["hash"]}],
            }
        )
    recorded = dt.datetime.strptime(body["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"{instance_id}-{seq}",
        "type": _REST
        if interaction != "operation"
        else {"system": "urn:mamori:audit-tag", "code": body["tag"]},
        "subtype": [
            {
                "system": _INTERACTION if interaction != "operation" else "urn:mamori:audit-tag",
                "code": interaction if interaction != "operation" else body["tag"],
            }
        ],
        "action": action,
        "recorded": recorded.astimezone(JST).isoformat(timespec="milliseconds"),
        "outcome": "0" if body.get("outcome") == "success" else "8",
        "agent": [agent],
        "source": {
            "observer": {"display": f"mamori {instance_id}"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                }
            ],
        },
        "extension": [
            {"url": "urn:mamori:audit-seq", "valueInteger": seq},
            {"url": "urn:mamori:audit-tag", "valueString": body["tag"]},
        ],
    }
    if profile:
        event["meta"] = {"profile": [BALP + profile]}
    if entities:
        event["entity"] = entities
    return event


def export_ndjson(
    session: Session, out: Path, instance_id: str, progress: Callable[[int], None] | None = None
) -> int:
    """Write every event as one AuditEvent per line; returns the count."""
    count = 0
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("w", encoding="utf-8") as fh:
        stmt = (
            select(AuditEvent.seq, AuditEvent.body)
            .order_by(AuditEvent.seq)
            .execution_options(yield_per=5000)
        )
        for seq, body in session.execute(stmt):
            fh.write(
                json.dumps(
                    to_audit_event(seq, json.loads(bytes(body)), instance_id), ensure_ascii=False
                )
                + "\n"
            )
            count += 1
            if progress and count % 1000 == 0:
                progress(1000)
    tmp.replace(out)
    return count
