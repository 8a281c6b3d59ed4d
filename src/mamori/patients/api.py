"""JSON API for patients and coverage: a thin edge over ``patients.service``."""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from mamori.authz.permissions import P
from mamori.patients import service
from mamori.patients.schemas import (
    CoverageIn,
    CoverageOut,
    MergeIn,
    PatientNew,
    PatientOut,
    PatientUpdate,
)
from mamori.web.routing import Ctx, TransactionalRoute, requires

router = APIRouter(prefix="/api/v1", tags=["patients"], route_class=TransactionalRoute)


class CoverageUpdate(CoverageIn):
    expected_version: int = Field(ge=1)


@router.post("/patients", status_code=201, response_model=PatientOut)
def register_patient(body: PatientNew, ctx: Ctx = Depends(requires(P.PATIENT_WRITE))) -> object:
    return service.register_patient(ctx.session, ctx.actor, body)


@router.get("/patients", response_model=list[PatientOut])
def search_patients(
    kana: str | None = Query(default=None, max_length=60),
    name: str | None = Query(default=None, max_length=60),
    phone: str | None = Query(default=None, max_length=20),
    birth_date: dt.date | None = None,
    number: int | None = Query(default=None, ge=1),
    insurer_number: str | None = Query(default=None, pattern=r"^\d{6,8}$"),
    insured_number: str | None = Query(default=None, min_length=1, max_length=40),
    include_inactive: bool = False,
    limit: int = Query(default=50, ge=1, le=service.SEARCH_LIMIT_MAX),
    ctx: Ctx = Depends(requires(P.PATIENT_READ)),
) -> object:
    return service.search_patients(
        ctx.session,
        ctx.actor,
        kana=kana,
        name=name,
        phone=phone,
        birth_date=birth_date,
        patient_number=number,
        insurance=(insurer_number, insured_number) if insurer_number or insured_number else None,
        include_inactive=include_inactive,
        limit=limit,
    )


@router.get("/patients/{patient_id}", response_model=PatientOut)
def get_patient(patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.PATIENT_READ))) -> object:
    return service.get_patient(ctx.session, ctx.actor, patient_id)


@router.put("/patients/{patient_id}", response_model=PatientOut)
def update_patient(
    patient_id: uuid.UUID, body: PatientUpdate, ctx: Ctx = Depends(requires(P.PATIENT_WRITE))
) -> object:
    return service.update_patient(ctx.session, ctx.actor, patient_id, body)


@router.get("/patients/{patient_id}/duplicates", response_model=list[PatientOut])
def possible_duplicates(
    patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.PATIENT_READ))
) -> object:
    return service.find_possible_duplicates(ctx.session, ctx.actor, patient_id)


@router.post("/patients/{patient_id}/merge", response_model=PatientOut)
def merge_duplicate(
    patient_id: uuid.UUID, body: MergeIn, ctx: Ctx = Depends(requires(P.PATIENT_MERGE))
) -> object:
    return service.merge_patients(
        ctx.session, ctx.actor, patient_id, body.duplicate_id, body.reason
    )


@router.get("/patients/{patient_id}/coverages", response_model=list[CoverageOut])
def list_coverages(patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.INSURANCE_READ))) -> object:
    return service.list_coverages(ctx.session, ctx.actor, patient_id)


@router.post("/patients/{patient_id}/coverages", status_code=201, response_model=CoverageOut)
def add_coverage(
    patient_id: uuid.UUID, body: CoverageIn, ctx: Ctx = Depends(requires(P.INSURANCE_WRITE))
) -> object:
    return service.add_coverage(ctx.session, ctx.actor, patient_id, body)


@router.put("/coverages/{coverage_id}", response_model=CoverageOut)
def update_coverage(
    coverage_id: uuid.UUID, body: CoverageUpdate, ctx: Ctx = Depends(requires(P.INSURANCE_WRITE))
) -> object:
    data = CoverageIn.model_validate(body.model_dump(exclude={"expected_version"}))
    return service.update_coverage(ctx.session, ctx.actor, coverage_id, data, body.expected_version)
