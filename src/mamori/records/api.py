"""JSON API over any versioned record: history, entered-in-error, verification."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends

from mamori.authz.permissions import P
from mamori.clinical.schemas import EnteredInErrorIn, VersionOut
from mamori.records import service
from mamori.web.routing import Ctx, TransactionalRoute, requires

router = APIRouter(prefix="/api/v1", tags=["records"], route_class=TransactionalRoute)


@router.get("/records/{record_type}/{record_id}/history", response_model=list[VersionOut])
def history(
    record_type: str, record_id: uuid.UUID, ctx: Ctx = Depends(requires(P.PATIENT_READ))
) -> object:
    versions = service.record_history(ctx.session, ctx.actor, record_type, record_id)
    return [
        VersionOut(
            version=v.version,
            change=v.change,
            status=v.status,
            content=json.loads(v.content),
            changed_by_id=v.changed_by_id,
            changed_at=v.changed_at,
            reason=v.reason,
            prev_hash=v.prev_hash,
            content_hash=v.content_hash,
        )
        for v in versions
    ]


@router.post("/records/{record_type}/{record_id}/entered-in-error")
def entered_in_error(
    record_type: str,
    record_id: uuid.UUID,
    body: EnteredInErrorIn,
    ctx: Ctx = Depends(requires(P.RECORD_RETRACT)),
) -> dict[str, Any]:
    record = service.mark_entered_in_error(
        ctx.session, ctx.actor, record_type, record_id, body.reason, body.expected_version
    )
    return {
        "id": str(record.id),
        "status": record.status,
        "version": record.version,
        "content_hash": record.content_hash,
    }


@router.get("/patients/{patient_id}/verify")
def verify_patient(
    patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.RECORD_VERIFY))
) -> dict[str, Any]:
    problems = service.verify_patient_records(ctx.session, ctx.actor, patient_id, ctx.store)
    return {
        "ok": not problems,
        "problems": [
            {
                "record_type": p.record_type,
                "record_id": str(p.record_id),
                "version": p.version,
                "problem": p.problem,
            }
            for p in problems
        ],
    }
