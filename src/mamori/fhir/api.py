"""Read-only FHIR R4 API (JP Core-shaped): read, search by patient, Patient search,
``Patient/{id}/$everything`` and a CapabilityStatement."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from mamori import __version__
from mamori.authz.permissions import P
from mamori.fhir import mapping, service
from mamori.fhir.bulk import RESOURCE_TYPES
from mamori.web.routing import Ctx, TransactionalRoute, public, requires

router = APIRouter(prefix="/fhir/r4", tags=["fhir"], route_class=TransactionalRoute)
FHIR_JSON = "application/fhir+json; charset=utf-8"


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:

        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir/r4"


@router.get("/metadata", dependencies=[Depends(public)], response_class=FhirResponse)
def capability_statement() -> dict[str, Any]:
    profile_for = {"Observation": mapping.PROFILES["Observation:laboratory"]}
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "kind": "instance",
        "software": {"name": "mamori", "version": __version__},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {
                        "type": t,
                        "profile": profile_for.get(t, mapping.PROFILES.get(t, "")),
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": (
                            [
                                {"name": "name", "type": "string"},
                                {"name": "birthdate", "type": "date"},
                                {"name": "identifier", "type": "token"},
                            ]
                            if t == "Patient"
                            else [{"name": "patient", "type": "reference"}]
                        ),
                    }
                    for t in RESOURCE_TYPES
                ],
                "operation": [
                    {
                        "name": "everything",
                        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                    }
                ],
            }
        ],
    }


@router.get("/Patient", response_class=FhirResponse)
def search_patients(
    request: Request,
    name: str | None = Query(default=None, max_length=60),
    birthdate: str | None = Query(default=None, max_length=20),
    identifier: str | None = Query(default=None, max_length=200),
    count: int = Query(default=50, alias="_count", ge=1, le=200),
    ctx: Ctx = Depends(requires(P.PATIENT_READ)),
) -> dict[str, Any]:
    found = service.search_patient_resources(
        ctx.session, ctx.actor, name=name, birthdate=birthdate, identifier=identifier, count=count
    )
    return service.bundle("Patient", found, _base(request))


@router.get("/Patient/{patient_id}/$everything", response_class=FhirResponse)
def patient_everything(
    request: Request, patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.CHART_READ))
) -> dict[str, Any]:
    resources = service.everything(ctx.session, ctx.actor, patient_id)
    out = service.bundle("Patient", resources, _base(request))
    out["type"] = "searchset"
    return out


@router.get("/{resource_type}", response_class=FhirResponse)
def search_by_patient(
    request: Request,
    resource_type: str,
    patient: uuid.UUID,
    ctx: Ctx = Depends(requires(P.PATIENT_READ)),
) -> dict[str, Any]:
    found = service.resources_for_patient(ctx.session, ctx.actor, patient, resource_type)
    return service.bundle(resource_type, found, _base(request))


@router.get("/{resource_type}/{rid}", response_class=FhirResponse)
def read(
    resource_type: str, rid: str, ctx: Ctx = Depends(requires(P.PATIENT_READ))
) -> dict[str, Any]:
    return service.read(ctx.session, ctx.actor, resource_type, rid)
