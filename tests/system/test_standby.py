"""The read-only standby (BCP 3-4): a second PC serves the newest verified backup generation
read-only, refuses every write — from a page, the API or the CLI — refreshes from newer
generations without losing its own log or anyone's session, never serves a generation that
fails verification, and its log merges back into the main one, verifiably and once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.conftest import SAMPLE_PATIENT, person_token
from tests.system.test_backup import PASS, _instance, _keys, _run, _targets
from typer.testing import CliRunner

from mamori import copies
from mamori.app import create_app
from mamori.audit.checkpointer import load_checkpoints, origin, signer
from mamori.audit.models import AuditEvent
from mamori.audit.verify import verify_log
from mamori.auth.models import AuthSession, SecurityAlert
from mamori.cli.main import app
from mamori.clinic.models import StaffUser
from mamori.continuity import standby
from mamori.continuity.models import StandbyMerge
from mamori.instance import Instance, open_instance

runner = CliRunner()


@pytest.fixture
def main(tmp_path: Path) -> Any:
    """A clinic with synthetic patients, backed up to a disk, and the director's bearer
    credential made before the backup (a copy takes no new one)."""
    created = _instance(tmp_path)
    keys = _keys(created.instance, tmp_path / "offline")
    usb = tmp_path / "usb"
    usb.mkdir()
    inst = _targets(created.instance, {"name": "usb", "kind": "dir", "path": str(usb)})
    with inst.transaction(write=True) as s:
        doctor = s.scalars(select(StaffUser).where(StaffUser.login_id == "admin")).one()
        token = person_token(s, inst.settings, doctor)
    assert _run(inst).ok
    yield inst, keys, usb, token
    inst.db.dispose()


def _cli(tmp_path: Path, *args: str, home: Path | None = None) -> Any:
    env = {"MAMORI_BACKUP_PASSPHRASE": PASS}
    if home is not None:
        env["MAMORI_HOME"] = str(home)
    return runner.invoke(app, list(args), env=env)


def _standby_once(tmp_path: Path, keys: Path, usb: Path) -> Any:
    return _cli(
        tmp_path, "standby", "--from", f"dir:{usb}", "--identity",
        str(keys / "mamori-backup-primary.age"), "--dir", str(tmp_path / "sb"),
        "--key-dir", str(tmp_path / "sbkeys"), "--once",
    )  # fmt: skip


def _events(inst: Instance) -> int:
    with inst.transaction(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def _verify(inst: Instance) -> Any:
    cps, bad = load_checkpoints(
        inst.settings.checkpoint_dir, [signer(inst.settings).verifier()], origin(inst.settings)
    )
    with inst.transaction(write=False) as s:
        report = verify_log(s, cps)
    assert not bad
    return report


def test_the_standby_serves_read_only_and_its_log_merges_back_verifiably_once(
    main: Any, tmp_path: Path
) -> None:
    inst, keys, usb, token = main
    out = _standby_once(tmp_path, keys, usb)
    assert out.exit_code == 0, out.output
    served = standby.current(tmp_path / "sb")
    assert served is not None and served.generation == 1 and served.as_of
    marked = copies.marker(served.home)
    assert marked and marked["standby"] and marked["base_seq"] > 0
    banner = copies.copy_banner(served.home)
    assert banner and banner["as_of"] and banner["age_minutes"] is not None
    assert (served.home / "tls" / "cert.pem").read_bytes() == (
        tmp_path / "sb" / "tls" / "cert.pem"
    ).read_bytes()  # the standby's own certificate, not the main server's

    copy = open_instance(str(served.home))
    try:
        assert copy.db.read_only
        bearer = {"Authorization": f"Bearer {token}"}
        with TestClient(create_app(copy.settings, copy.db), base_url="https://testserver") as http:
            found = http.get("/api/v1/patients", params={"number": 1}, headers=bearer)
            assert found.status_code == 200, found.text
            pid = found.json()[0]["id"]
            assert http.get(f"/api/v1/patients/{pid}/chart", headers=bearer).status_code == 200
            refused = http.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=bearer)
            assert refused.status_code == 409
            assert refused.json()["error"]["code"] == "read_only_copy"
            assert "参照専用" in refused.json()["error"]["message_ja"]
        # a scheduled backup from the copy would put a second history beside the original's
        out = _cli(tmp_path, "backup", "run", home=served.home)
        assert out.exit_code != 0 and "read-only copy" in out.output.replace("\n", " ")
    finally:
        copy.db.dispose()

    before = _events(inst)
    out = _cli(tmp_path, "standby", "export-log", "--dir", str(tmp_path / "sb"))
    assert out.exit_code == 0 and "standby-g1-" in out.output.replace("\n", ""), out.output
    (segment,) = (tmp_path / "sb" / "log").glob("standby-*.jsonl")

    # altered after it was signed: refused, nothing merged
    good = segment.read_bytes()
    segment.write_bytes(good.replace(b"patient:chart:viewed", b"patient:list:viewed_", 1))
    out = _cli(tmp_path, "standby", "merge-log", "--from", str(tmp_path / "sb"), "--as", "admin",
               home=inst.settings.home)  # fmt: skip
    assert out.exit_code != 0 and "signature" in out.output.replace("\n", " "), out.output
    assert _events(inst) == before
    segment.write_bytes(good)

    out = _cli(tmp_path, "standby", "merge-log", "--from", str(tmp_path / "sb"), "--as", "admin",
               home=inst.settings.home)  # fmt: skip
    assert out.exit_code == 0, out.output
    with inst.transaction(write=False) as s:
        bodies = [json.loads(bytes(b)) for b in s.scalars(select(AuditEvent.body))]
        merges = s.scalars(select(StandbyMerge)).all()
    from_standby = [b for b in bodies if "standby" in (b.get("detail") or {})]
    tags = {b["tag"] for b in from_standby}
    assert {"system:backup:restored", "patient:chart:viewed", "patient:list:viewed"} <= tags
    chart = next(b for b in from_standby if b["tag"] == "patient:chart:viewed")
    assert chart["patients"] == [pid] and chart["detail"]["standby"]["at"]
    assert chart["actor"]["role"] == "director"
    assert any(b["tag"] == "continuity:standby-log:merged" for b in bodies)
    assert len(merges) == 1 and merges[0].events == len(from_standby)
    assert _verify(inst).ok  # the main log still verifies, with the standby's events in it

    # merged once: the same segment again changes nothing
    after = _events(inst)
    out = _cli(tmp_path, "standby", "merge-log", "--from", str(tmp_path / "sb"), "--as", "admin",
               home=inst.settings.home)  # fmt: skip
    assert out.exit_code == 0 and "already merged" in out.output, out.output
    assert _events(inst) == after

    # only a director (or the security officer) merges
    with inst.transaction(write=True) as s:
        nurse = s.scalars(select(StaffUser).where(StaffUser.role == "nurse")).first()
        assert nurse is not None
        nurse_login = nurse.login_id
    out = _cli(tmp_path, "standby", "merge-log", "--from", str(tmp_path / "sb"), "--as",
               nurse_login, home=inst.settings.home)  # fmt: skip
    assert out.exit_code != 0 and "continuity:admin" in out.output, out.output


def test_a_segment_from_another_fork_point_is_refused(main: Any, tmp_path: Path) -> None:
    """A segment claims to continue the main log at some event; if the main log's own chain
    there differs (a segment from an altered generation, or forged with the key), it is refused."""
    inst, keys, usb, _ = main
    assert _standby_once(tmp_path, keys, usb).exit_code == 0
    served = standby.current(tmp_path / "sb")
    assert served is not None
    path = standby.export_segment(served.home, tmp_path / "sb" / "log")
    assert path is not None
    segment = standby.read_segment(path, inst.settings)
    segment.header["base_chain"] = "00" * 32
    with inst.transaction(write=True) as s, pytest.raises(standby.StandbyError, match="fork"):
        standby.merge_segments(s, inst.actor(s, "admin"), [segment])


def test_refresh_serves_a_newer_generation_and_keeps_sessions_and_the_old_copys_log(
    main: Any, tmp_path: Path
) -> None:
    inst, keys, usb, _ = main
    assert _standby_once(tmp_path, keys, usb).exit_code == 0
    first = standby.current(tmp_path / "sb")
    assert first is not None
    copy = open_instance(str(first.home))
    try:
        with copy.transaction(write=True) as s:  # someone is signed in on the standby
            user = s.scalars(select(StaffUser).where(StaffUser.login_id == "admin")).one()
            from mamori.auth import service as auth

            auth._new_session(
                s, copy.settings.token_pepper, copy.settings.auth, user,
                auth.Client(ip="127.0.0.1", user_agent="test", device_token=None), stage="full",
                shared_terminal=False,
            )  # fmt: skip
    finally:
        copy.db.dispose()
    assert _run(inst, full=True).ok  # the main server goes on: a newer generation
    out = _standby_once(tmp_path, keys, usb)
    assert out.exit_code == 0, out.output
    second = standby.current(tmp_path / "sb")
    assert second is not None and second.generation == 2
    assert not first.home.exists()  # the retired copy is gone …
    (segment,) = (tmp_path / "sb" / "log").glob("standby-g1-*.jsonl")  # … its log is not
    assert segment.with_suffix(".sig").is_file()
    copy = open_instance(str(second.home))
    try:
        with copy.transaction(write=False) as s:
            assert s.scalar(select(func.count()).select_from(AuthSession)) == 1
    finally:
        copy.db.dispose()


def test_a_generation_that_fails_verification_is_never_served(main: Any, tmp_path: Path) -> None:
    inst, keys, usb, _ = main
    # no copy yet and the newest generation is damaged: nothing is served, nothing left
    objects = sorted((usb / "mamori-backup").rglob("db.full.sqlite.zst.age"))
    damaged = objects[-1]
    good = damaged.read_bytes()
    damaged.write_bytes(good[:-10] + bytes(10))
    out = _standby_once(tmp_path, keys, usb)
    assert out.exit_code != 0 and "altered" in out.output.replace("\n", " "), out.output
    assert standby.current(tmp_path / "sb") is None
    assert not any((tmp_path / "sb" / "copies").iterdir())
    damaged.write_bytes(good)
    assert _standby_once(tmp_path, keys, usb).exit_code == 0
    served = standby.current(tmp_path / "sb")
    assert served is not None

    # a newer generation that fails: the previous copy keeps serving, the failure is shown
    assert _run(inst, full=True).ok
    newest = sorted((usb / "mamori-backup").rglob("db.full.sqlite.zst.age"))[-1]
    newest.write_bytes(newest.read_bytes()[:-10] + bytes(10))
    out = _standby_once(tmp_path, keys, usb)
    assert out.exit_code == 0, out.output
    still = standby.current(tmp_path / "sb")
    assert still == served
    banner = copies.copy_banner(served.home)
    assert banner and banner["error"] and "altered" in banner["error"]["en"]
    copy = open_instance(str(served.home))
    try:
        with copy.transaction(write=False) as s:
            alerts = s.scalars(select(SecurityAlert.kind)).all()
        assert "standby-failed" in alerts
    finally:
        copy.db.dispose()


def test_the_cli_refuses_every_write_on_a_copy(main: Any, tmp_path: Path) -> None:
    """Each command that changes the clinic's data, run against the standby's copy: refused
    with the read-only message, and the copy's tables unchanged (its log records only what it
    read). ``mamori isolate`` stays possible: it cuts a suspect PC off, it writes no record."""
    _, keys, usb, _ = main
    assert _standby_once(tmp_path, keys, usb).exit_code == 0
    served = standby.current(tmp_path / "sb")
    assert served is not None
    home = served.home
    writes = [
        ["staff", "add", "newdoc", "--name", "新人 医師", "--role", "physician", "--as",
         "admin"],
        ["staff", "password", "admin"],
        ["downtime", "keygen", "--out", str(tmp_path / "k.age"), "--label", "受付", "--as",
         "admin"],
        ["downtime", "drill", "--scenario", "cannot-view", "--participants", "院長",
         "--reached", "--minutes", "5", "--as", "admin"],
        ["backup", "run"],
    ]  # fmt: skip
    copy = open_instance(str(home))
    try:
        counts = _table_counts(copy)
    finally:
        copy.db.dispose()
    for argv in writes:
        out = _cli(tmp_path, *argv, home=home)
        text = out.output.replace("\n", " ")
        assert out.exit_code != 0, (argv, out.output)
        assert "read-only" in text or "参照専用" in text, (argv, out.output)
    copy = open_instance(str(home))
    try:
        after = _table_counts(copy)
    finally:
        copy.db.dispose()
    changed = {t for t in counts if counts[t] != after[t]}
    assert changed <= {"audit_event", "audit_event_user", "audit_event_patient", "audit_head"}
    assert not (tmp_path / "k.age").exists()
    shutil.rmtree(tmp_path / "sb")


def _table_counts(inst: Instance) -> dict[str, int]:
    from sqlalchemy import text

    from mamori.db import Base

    with inst.transaction(write=False) as s:
        return {
            t: int(s.scalar(text(f'SELECT count(*) FROM "{t}"')) or 0) for t in Base.metadata.tables
        }


def test_two_segments_of_one_copy_merge_in_order_and_a_gap_is_refused(
    main: Any, tmp_path: Path
) -> None:
    """A copy's log written out twice (a merge while it still served, then its stop): the
    second continues the first. Merged alone, the second is refused — it does not continue
    anything this log holds — and merged after the first it is accepted."""
    from mamori.audit.trail import AuditTag, record_system

    inst, keys, usb, _ = main
    assert _standby_once(tmp_path, keys, usb).exit_code == 0
    served = standby.current(tmp_path / "sb")
    assert served is not None
    log_dir = tmp_path / "sb" / "log"
    first = standby.export_segment(served.home, log_dir)
    copy = open_instance(str(served.home))
    try:
        with copy.transaction(write=False) as s:  # the copy goes on recording
            record_system(s, AuditTag.RECORDS_VERIFIED, {"on": "standby"})
    finally:
        copy.close()
    second = standby.export_segment(served.home, log_dir)
    assert first is not None and second is not None and first != second
    one, two = (standby.read_segment(p, inst.settings) for p in (first, second))
    assert two.header["base_seq"] == one.header["last_seq"]
    with inst.transaction(write=True) as s, pytest.raises(standby.StandbyError):
        standby.merge_segments(s, inst.actor(s, "admin"), [two])
    with inst.transaction(write=True) as s:
        done = standby.merge_segments(s, inst.actor(s, "admin"), [two, one])  # any order
    assert [d["events"] for d in done] == [len(one.events), len(two.events)]
    assert _verify(inst).ok
