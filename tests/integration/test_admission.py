"""Admission (``TransactionalRoute``): at most ``[limits] concurrent_requests`` requests inside
the service layer at once; the others wait on the event loop and go in as places free up."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from tests.conftest import World

from mamori.documents.store import DocumentStore
from mamori.errors import InstanceError
from mamori.settings import load_settings, write_instance_files
from mamori.web.routing import SignInCtx, TransactionalRoute, signing_in


def _serve(
    world: World, places: int
) -> tuple[FastAPI, list[int], threading.Event, threading.Event]:
    entered: list[int] = []
    first_inside, let_go = threading.Event(), threading.Event()
    router = APIRouter(route_class=TransactionalRoute)

    @router.post("/work/{n}", response_model=dict[str, int])
    def work(n: int, ctx: SignInCtx = Depends(signing_in)) -> dict[str, int]:
        entered.append(n)
        if n == 1:
            first_inside.set()
            assert let_go.wait(20)
        return {"n": n}

    app = FastAPI()
    app.state.settings = dataclasses.replace(world.settings, concurrent_requests=places)
    app.state.db = world.db
    app.state.store = DocumentStore(world.settings.documents_dir, world.db)
    app.include_router(router)
    return app, entered, first_inside, let_go


@pytest.mark.parametrize("places", [1, 2])
def test_a_request_beyond_the_places_waits_until_one_is_free(world: World, places: int) -> None:
    app, entered, first_inside, let_go = _serve(world, places)
    answers: dict[int, int] = {}
    with TestClient(app) as client:

        def send(n: int) -> None:
            answers[n] = client.post(f"/work/{n}").status_code

        first = threading.Thread(target=send, args=(1,))
        second = threading.Thread(target=send, args=(2,))
        try:
            first.start()
            assert first_inside.wait(20)
            second.start()
            if places == 1:
                second.join(1.0)
                assert second.is_alive() and entered == [1]  # waiting outside the service
            else:
                second.join(20)  # the second place: in and answered while the first is inside
                assert answers == {2: 200} and entered == [1, 2]
        finally:
            let_go.set()
            first.join(20)
            second.join(20)
    assert answers == {1: 200, 2: 200} and sorted(entered) == [1, 2]


@pytest.mark.parametrize("value", ["-1", "9", '"4"', "true", "2.5"])
def test_a_bad_concurrent_requests_value_refuses_to_start(tmp_path: Path, value: str) -> None:
    home = tmp_path / "instance"
    write_instance_files(home, database_url=None, port=8000)
    toml = home / "mamori.toml"
    text = toml.read_text(encoding="utf-8")
    assert "concurrent_requests = 0" in text  # written, with its default, by `mamori init`
    toml.write_text(text.replace("concurrent_requests = 0", f"concurrent_requests = {value}"))
    with pytest.raises(InstanceError, match="concurrent_requests"):
        load_settings(home)


def test_concurrent_requests_defaults_to_the_cores_and_can_be_set(tmp_path: Path) -> None:
    home = tmp_path / "instance"
    write_instance_files(home, database_url=None, port=8000)
    assert load_settings(home).concurrent_requests >= 2
    toml = home / "mamori.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace(
            "concurrent_requests = 0", "concurrent_requests = 3"
        )
    )
    assert load_settings(home).concurrent_requests == 3
