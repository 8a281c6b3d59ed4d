"""The API as a contract: a property-based fuzzer (schemathesis) over the OpenAPI document.

Every JSON/FHIR operation gets schema-valid requests generated from the document, sent with a
physician's and a director's credentials, bounded in number (``EXAMPLES`` per operation and
role) and in time. Each answer must be no server error (5xx), and must be what the document
says it can be: a declared status code, the declared content type, a body that matches the
declared schema (the ``{"error": …}`` shape for every refusal). A request the schema allows
but a route refuses (a patient search with no criteria) is a declared 422, never a surprise.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.conftest import World

# per operation, role and mode (schema-valid / invalid requests): bounded, about a minute in all
EXAMPLES = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 6}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def _walk(operation: Any, headers: dict[str, str], label: str, mode: GenerationMode) -> list[str]:
    """``EXAMPLES`` generated requests to one operation; what each answer got wrong."""
    seen: list[str] = []

    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run: a failure reproduces
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def walk(case: Any) -> None:
        response = case.call(headers=headers)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except BaseException as exc:
            seen.append(f"{label}: {response.status_code} {str(exc)[:300]}")

    try:
        walk()
    except Unsatisfiable:  # no invalid request exists (an operation that takes no input)
        assert mode is GenerationMode.NEGATIVE, label
    return seen


def _failures(world: World, who: str, mode: GenerationMode) -> list[str]:
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", world.http.app)
    found: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path} as {who} ({mode.value})"
        found += _walk(operation, world.h(who), label, mode)[:2]
    return found


@pytest.mark.one_backend  # the contract does not depend on the database
def test_every_operation_answers_as_its_document_says(world: World) -> None:
    problems: list[str] = []
    for who in ("dr_aiko", "director"):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            problems += _failures(world, who, mode)
    assert not problems, "\n".join(problems[:40]) + f"\n({len(problems)} problems)"


@pytest.mark.one_backend
def test_the_document_declares_the_refusals_fhir_json_and_405_says_allow(world: World) -> None:
    doc = world.http.get("/api/openapi.json").json()
    for path, operations in doc["paths"].items():
        if not path.startswith(("/api/", "/fhir/")):
            continue  # /healthz: for the supervisor, no credentials, no refusals
        for method, op in operations.items():
            declared = set(op["responses"])
            assert {"401", "403", "404", "409", "422"} <= declared, (method, path)
            if method in ("post", "put", "patch"):
                assert {"400", "413"} <= declared, (method, path)
            if path.startswith("/fhir/"):
                media = {m for r in op["responses"].values() for m in r.get("content", {})}
                assert media and all(m.startswith("application/fhir+json") for m in media), path
    assert "429" in doc["paths"]["/api/v1/auth/login"]["post"]["responses"]
    for path, wrong, kind in (
        ("/api/v1/patients", "DELETE", "application/json"),
        ("/fhir/r4/metadata", "PATCH", "application/fhir+json"),
    ):
        r = world.http.request(wrong, path, headers=world.h("dr_aiko"))
        assert r.status_code == 405 and r.headers["allow"], (path, r.headers)
        assert r.headers["content-type"].startswith(kind)
