"""The read-only standby (参照系, BCP 3-4): the clinic's records on a second PC when the server
is down, refreshed from the backups, never written.

``mamori standby --from TARGET --identity KEY --dir ROOT`` keeps, under ``ROOT``::

    CURRENT          which restored copy is being served (JSON, replaced atomically)
    copies/<name>/   restored instances: the served one and, during a refresh, the next
    log/             the standby's own audit segments (signed), for ``mamori standby merge-log``
    tls/             the standby's own certificate, the same across refreshes

Each copy is an ordinary restore (every proof of ``mamori restore``: manifest signature,
database hash, counts, the audit trail against its checkpoints) of the newest generation that
verifies, left ``READ_ONLY`` with what the banner shows: the time of the newest record in it
(「YYYY-MM-DD HH:MM 時点のデータ」) and the last refresh attempt. A generation that fails
verification is never served: the copy being served stays, and an alert says why.

Staff sign in on the standby with their own accounts and second factors from the restored
data, and every read is audited in the copy's own log, continuing the main log's chain from the
generation's last event. When a copy is retired (a refresh, a stop, or a merge while it is
still serving), the events it added are written out as a **segment**: the events' exact
bodies and chain hashes, from the main log's event it forked at, signed with the clinic's
audit key (restored with the copy). ``merge_segments`` then brings them into the recovered
main log, verifiably: the segment's signature, its fork point against the main log's own chain
at that event (or its predecessor segment's head), the chain through every body; each event is
appended with its original actor, patients and time (``detail.standby``), the merge itself is
one more event, and a segment is merged once (``standby_merge``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from mamori import copies
from mamori.audit.checkpointer import signer
from mamori.audit.models import GENESIS_CHAIN, AuditEvent, chain_next
from mamori.audit.trail import AuditTag, queue_event, record
from mamori.auth.models import AuthSession, SecurityAlert
from mamori.authz.actor import Actor
from mamori.authz.permissions import P
from mamori.backup import fmt
from mamori.backup.config import TargetSpec
from mamori.backup.fetch import Restored, Say
from mamori.backup.identity import Identity
from mamori.backup.restore import choose_generation, restore
from mamori.backup.targets import open_target
from mamori.backup.verify import verify_target
from mamori.clinic.models import Clinic
from mamori.continuity import pgserver
from mamori.continuity.models import StandbyMerge
from mamori.db import utcnow
from mamori.errors import MamoriError
from mamori.instance import Instance, open_instance
from mamori.settings import AuthSettings, host_in_url

SEGMENT_FORMAT = "mamori-standby-log/1"
CURRENT = "CURRENT"
_CARRIED = ("auth_session",)  # carried from a retired copy into the next: nobody signs in again


class StandbyError(MamoriError):
    status = 409
    code = "standby_refused"


@dataclass(frozen=True)
class Source:
    """Where the standby fetches from, and the offline identity that opens it."""

    spec: TargetSpec
    ident: Identity
    key_dir: Path | None = None


@dataclass(frozen=True)
class Primary:
    """The main server to stream from: a libpq URI of a role with REPLICATION
    (``postgresql://replicator@192.168.1.10:5432/mamori``; the database named is mamori's)
    and its password (``MAMORI_REPLICA_PASSWORD``), never on a command line."""

    uri: str
    password: str | None = None


class Refresher(Protocol):
    def __call__(
        self, root: Path, source: Source, *, progress: Say | None, origins: Sequence[str]
    ) -> Copy | None: ...


@dataclass(frozen=True)
class Copy:
    home: Path
    generation: int
    manifest: str
    as_of: str | None  # the newest record in it (ISO, UTC)


# ------------------------------------------------------------------ copies


def current(root: Path) -> Copy | None:
    try:
        found = json.loads((root / CURRENT).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StandbyError(
            f"{root / CURRENT} が壊れています。", f"{root / CURRENT} is damaged."
        ) from exc
    return Copy(root / found["home"], found["generation"], found["manifest"], found.get("as_of"))


def _write_json(path: Path, body: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(body, ensure_ascii=False).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _serve_from(root: Path, copy: Copy) -> None:
    _write_json(
        root / CURRENT,
        {
            "home": str(copy.home.relative_to(root)),
            "generation": copy.generation,
            "manifest": copy.manifest,
            "as_of": copy.as_of,
        },
    )


def newest_generation(source: Source) -> tuple[int, str]:
    """The newest generation on the target that may be served (its number and manifest hash);
    raises, saying why, when the newest one does not verify (it is never skipped silently)."""

    target = open_target(source.spec, source.ident.instance_id)
    try:
        report = verify_target(
            target, fmt.public_from_text(source.ident.signer), source.ident.instance_id, deep=False
        )
        chosen = choose_generation(report, None)
    finally:
        target.close()
    return chosen.generation, chosen.hash


def refresh(
    root: Path, source: Source, *, progress: Say | None = None, origins: Sequence[str] = ()
) -> Copy | None:
    """Restore the newest verified generation into a new copy, if it is newer than the one
    served; the served copy is untouched either way (``CURRENT`` changes in :func:`switch`).
    Raises (nothing half-made is left) when the newest generation cannot be served."""

    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    served = current(root)
    generation, manifest = newest_generation(source)
    if served is not None and served.manifest == manifest:
        return None
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    dest = root / "copies" / f"g{generation}-{stamp}"
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    done: Restored = restore(
        source.spec, source.ident, dest, generation=generation, key_dir=source.key_dir,
        progress=progress,
    )  # fmt: skip
    try:
        marked = copies.marker(dest) or {}
        copies.mark(
            dest,
            {
                **marked,
                "standby": True,
                "copy_id": str(uuid.uuid4()),
                "base_seq": done.last_event_seq,
                "as_of": done.last_event_at,
                "refreshed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        )
        _own_certificate(root, dest)
        _allow_origins(dest, origins)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return Copy(dest, done.generation, done.manifest, done.last_event_at)


def _own_certificate(root: Path, home: Path) -> None:
    """The standby's certificate (``root/tls``, made once for this PC's names by the command)
    replaces the one restored from the main server: browsers see the same certificate after
    every refresh. Without one, the copy's server makes its own, as any instance does."""
    cert, key = root / "tls" / "cert.pem", root / "tls" / "key.pem"
    tls = home / "tls"
    if not (cert.is_file() and key.is_file()):
        shutil.rmtree(tls, ignore_errors=True)  # never the main server's key on this PC
        return
    tls.mkdir(mode=0o700, exist_ok=True)
    for src, name in ((cert, "cert.pem"), (key, "key.pem")):
        shutil.copyfile(src, tls / name)
        os.chmod(tls / name, 0o600)


def standby_origins(host: str, port: int) -> list[str]:
    """The addresses staff type to reach the standby PC (its sign-in forms check the origin)."""
    names = ["localhost", "127.0.0.1", socket.gethostname()]
    if host not in ("0.0.0.0", "::", "127.0.0.1", "localhost"):  # noqa: S104 - a comparison
        names.append(host)
    return [f"https://{host_in_url(n)}:{port}" for n in dict.fromkeys(names)]


def _allow_origins(home: Path, origins: Sequence[str]) -> None:
    """Add the standby's own addresses to the copy's ``[auth] origins`` (the main server's
    stay: a copy reached under the main server's name keeps working)."""
    if not origins:
        return
    toml = home / "mamori.toml"
    text = toml.read_text(encoding="utf-8")
    settings = tomllib.loads(text)
    auth = settings.get("auth", {})
    known = [str(o) for o in auth.get("origins", AuthSettings().origins)]
    line = "origins = [" + ", ".join(json.dumps(o) for o in dict.fromkeys([*known, *origins])) + "]"
    found = re.search(r"(?m)^origins\s*=\s*\[[^\]]*\]", text)
    if found and "auth" in settings and "origins" in auth:
        text = text[: found.start()] + line + text[found.end() :]
    elif re.search(r"(?m)^\[auth\][ \t]*$", text):
        text = re.sub(r"(?m)^\[auth\][ \t]*$", lambda _: "[auth]\n" + line, text, count=1)
    else:
        text += f"\n[auth]\n{line}\n"
    toml.write_text(text, encoding="utf-8")


def note_attempt(root: Path, error: MamoriError | None) -> None:
    """The last refresh attempt, shown in the standby's banner (``copy_banner``): a failure
    stays visible until a refresh succeeds; an alert is raised for the director as well."""
    served = current(root)
    if served is None:
        return
    marked = copies.marker(served.home) or {}
    body = dict(marked)
    body["checked_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if error is None:
        body.pop("refresh_error", None)
    else:
        body["refresh_error"] = {"ja": error.ja[:300], "en": error.en[:300]}
        _alert(served.home, f"待機系の更新に失敗しました（前のデータで参照を続けます）: {error.ja}")
    copies.mark(served.home, body)


def _alert(home: Path, summary: str) -> None:

    with _opened(home) as inst, inst.transaction(write=True) as session:
        clinic = session.scalars(select(Clinic).order_by(Clinic.created_at)).first()
        if clinic is not None:
            session.add(
                SecurityAlert(clinic_id=clinic.id, kind="standby-failed", summary=summary[:300])
            )


def switch(root: Path, old: Copy | None, new: Copy) -> Path | None:
    """Serve ``new`` from now on. The old copy's own log is written out as a segment first and
    its open sessions are carried over; then the old copy is removed. Call with no server
    running on either copy. Returns the segment written, if any."""
    segment = export_segment(old.home, root / "log") if old is not None else None
    if old is not None:
        _carry_sessions(old.home, new.home)
    _serve_from(root, new)
    if old is not None:
        pgserver.retire(root, old.home)  # a PostgreSQL standby's snapshot server
        shutil.rmtree(old.home, ignore_errors=True)
    return segment


def _carry_sessions(old: Path, new: Path) -> None:

    table = AuthSession.__table__
    now = utcnow()
    with _opened(old) as before, before.transaction(write=False) as s:
        rows = [
            dict(r) for r in s.execute(select(table).where(table.c.expires_at > now)).mappings()
        ]
    if not rows:
        return
    with _opened(new) as after, after.transaction(write=True) as s:
        known = set(s.scalars(select(table.c.id)))
        fresh = [r for r in rows if r["id"] not in known]
        if fresh:
            s.execute(insert(AuthSession), fresh)


@contextmanager
def _opened(home: Path) -> Iterator[Instance]:
    pgserver.ensure_up(home.parent.parent, home)  # a PostgreSQL standby's snapshot server
    inst = open_instance(str(home))
    try:
        yield inst
    finally:
        inst.close()


def run(
    root: Path,
    source: Source,
    *,
    host: str,
    port: int,
    every_minutes: float,
    say: Callable[[str], None],
    progress: Say | None = None,
    once: bool = False,
    refresher: Refresher | None = None,
) -> None:
    """``mamori standby``: make (or refresh) the copy, serve it read-only with ``mamori serve``
    in a child process, and every ``every_minutes`` look for a newer generation. A new one is
    restored beside the served copy while it keeps serving; only then is the server restarted
    on it (a few seconds; sessions carry over). A generation that fails verification leaves the
    served copy as it is, with the failure in its banner and an alert. ``once``: make or refresh
    the copy and return (a drill, a benchmark, a cron job).

    ``refresher``: how the next copy is made — by default :func:`refresh` (a restored
    generation); a PostgreSQL clinic's standby passes a snapshot of its streaming replica
    (``continuity.replica.refresh``). Everything else is the same for both."""
    make_copy = refresher or refresh

    def make() -> Copy | None:
        return make_copy(root, source, progress=progress, origins=standby_origins(host, port))

    served = current(root)
    try:
        fresh = make()
    except MamoriError as exc:
        if served is None:
            raise  # nothing verified to serve: say so, serve nothing
        say(
            f"更新できません（前のデータで続けます） / refresh failed, serving the previous "
            f"copy: {exc.en}"
        )
        note_attempt(root, exc)
        fresh, failed = None, True
    else:
        failed = False
    if fresh is not None:
        switch(root, served, fresh)
        served = fresh
        say(f"世代 {fresh.generation} を参照用に準備しました / generation {fresh.generation} ready")
    elif not failed:
        note_attempt(root, None)
    assert served is not None
    if once:
        pgserver.stop_all(root)  # a PostgreSQL standby's servers (none for SQLite)
        return
    pgserver.ensure_up(root, served.home)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    child = _serve(served.home, host, port)
    checked = time.monotonic()
    try:
        while not stop.wait(5.0):
            if child.poll() is not None:  # the server died: serve again at once
                say("参照サーバーを再起動します / restarting the standby server")
                child = _serve(served.home, host, port)
            if time.monotonic() - checked < every_minutes * 60:
                continue
            checked = time.monotonic()
            try:
                fresh = make()
            except MamoriError as exc:
                say(f"更新できません（前のデータで続けます） / refresh failed: {exc.en}")
                note_attempt(root, exc)
                continue
            if fresh is None:
                note_attempt(root, None)
                continue
            _stop(child)
            switch(root, served, fresh)
            served = fresh
            say(
                f"世代 {fresh.generation} に更新しました / now serving generation "
                f"{fresh.generation}"
            )
            child = _serve(served.home, host, port)
    finally:
        _stop(child)
        export_segment(served.home, root / "log")  # its own log, ready for merge-log
        pgserver.stop_all(root)


def _serve(home: Path, host: str, port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "mamori", "serve", "--instance", str(home)]
    argv += ["--host", host, "--port", str(port)]
    return subprocess.Popen(argv)  # noqa: S603 - our own interpreter and module


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# ------------------------------------------------------------------ segments


def export_segment(home: Path, log_dir: Path) -> Path | None:
    """The events this copy added since its last segment (or since the generation it was
    restored from), with the chain hash they continue from, signed; None when there are none."""
    marked = copies.marker(home) or {}
    if not marked.get("standby"):
        raise StandbyError(
            f"{home} は待機系のコピーではありません。", f"{home} is not a standby copy."
        )
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = int(marked.get("exported_seq", marked["base_seq"]))
    with _opened(home) as inst:
        with inst.transaction(write=False) as s:
            base_chain = (
                GENESIS_CHAIN
                if base == 0
                else bytes(
                    s.scalars(select(AuditEvent.chain_hash).where(AuditEvent.seq == base)).one()
                )
            )
            rows = list(
                s.execute(
                    select(AuditEvent.seq, AuditEvent.body, AuditEvent.chain_hash)
                    .where(AuditEvent.seq > base)
                    .order_by(AuditEvent.seq)
                )
            )
        key = signer(inst.settings)
        instance_id = inst.settings.instance_id
    if not rows:
        return None
    header = {
        "format": SEGMENT_FORMAT,
        "instance_id": instance_id,
        "copy_id": marked["copy_id"],
        "generation": marked["generation"],
        "manifest": marked["manifest"],
        "base_seq": base,
        "base_chain": base_chain.hex(),
        "first_seq": rows[0].seq,
        "last_seq": rows[-1].seq,
        "head_chain": bytes(rows[-1].chain_hash).hex(),
        "events": len(rows),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    lines = [json.dumps(header, sort_keys=True)]
    lines += [
        json.dumps(
            {
                "seq": r.seq,
                "body": bytes(r.body).decode("utf-8"),
                "chain": bytes(r.chain_hash).hex(),
            }
        )
        for r in rows
    ]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    name = f"standby-g{marked['generation']}-{rows[0].seq}-{rows[-1].seq}-{digest[:12]}"
    path = log_dir / f"{name}.jsonl"
    _write_bytes(path, data)
    sig = key.private_key.sign(_signed_text(digest).encode())
    _write_bytes(
        path.with_suffix(".sig"),
        (
            json.dumps({"key": key.verifier().vkey(), "sig": base64.b64encode(sig).decode()}) + "\n"
        ).encode(),
    )
    copies.mark(home, {**marked, "exported_seq": rows[-1].seq})
    return path


def _signed_text(digest: str) -> str:
    return f"{SEGMENT_FORMAT}\nsha256 {digest}\n"


def _write_bytes(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Segment:
    path: Path
    sha256: str
    header: dict[str, Any]
    events: list[tuple[int, bytes, bytes]]  # seq, body, chain


def read_segment(path: Path, settings: Any) -> Segment:
    """A segment file, its signature checked with this clinic's audit key and its chain walked
    from its base; anything else is refused with what is wrong."""

    def bad(ja: str, en: str) -> StandbyError:
        return StandbyError(f"{path.name}: {ja}", f"{path.name}: {en}")

    try:
        data = path.read_bytes()
        sig_doc = json.loads(path.with_suffix(".sig").read_text(encoding="utf-8"))
        sig = base64.b64decode(sig_doc["sig"], validate=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise bad(
            "読めないか、署名ファイルがありません。", f"unreadable or unsigned ({exc})."
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    try:
        signer(settings).verifier().public_key.verify(sig, _signed_text(digest).encode())
    except InvalidSignature:
        raise bad(
            "署名がこの診療所の監査鍵と一致しません（改ざんまたは別の診療所のもの）。",
            "the signature does not verify with this clinic's audit key (altered, or "
            "another clinic's).",
        ) from None
    try:
        lines = data.decode("utf-8").splitlines()
        header = json.loads(lines[0])
        entries = [json.loads(line) for line in lines[1:]]
    except (UnicodeDecodeError, ValueError, IndexError) as exc:
        raise bad("形式が正しくありません。", f"malformed ({exc}).") from exc
    if header.get("format") != SEGMENT_FORMAT or header.get("instance_id") != settings.instance_id:
        raise bad("この診療所の待機系の記録ではありません。", "not this clinic's standby log.")
    chain = bytes.fromhex(header["base_chain"])
    seq = int(header["base_seq"])
    events: list[tuple[int, bytes, bytes]] = []
    for entry in entries:
        body = entry["body"].encode("utf-8")
        seq += 1
        chain = chain_next(chain, body)
        if (
            entry["seq"] != seq
            or json.loads(body).get("seq") != seq
            or chain.hex() != entry["chain"]
        ):
            raise bad(f"#{seq} で連鎖が切れています。", f"the chain breaks at #{seq}.")
        events.append((seq, body, chain))
    if not events or seq != header["last_seq"] or chain.hex() != header["head_chain"]:
        raise bad("末尾が見出しと一致しません。", "its end does not match its header.")
    return Segment(path, digest, header, events)


def merge_segments(
    session: Session, actor: Actor, segments: Sequence[Segment]
) -> list[dict[str, Any]]:
    """Bring standby segments into this (the main) log: each checked against the chain it
    forked from, each event appended with its original actor, patients and time, one merge
    event per segment. A segment merged before is skipped (reported); one whose fork point
    does not match is refused and nothing of the call is written."""
    actor.require(P.CONTINUITY_ADMIN)
    done: list[dict[str, Any]] = []
    ordered = sorted(segments, key=lambda s: (s.header["copy_id"], s.header["base_seq"]))
    for seg in ordered:
        h = seg.header
        if session.get(StandbyMerge, seg.sha256) is not None:
            done.append({"segment": seg.path.name, "skipped": "already merged"})
            continue
        _check_fork(session, seg)
        for seq, body, _chain in seg.events:
            ev = json.loads(body)
            if ev.get("records"):
                raise StandbyError(
                    f"{seg.path.name}: #{seq} が記録を書いています（待機系は記録を書きません）。",
                    f"{seg.path.name}: #{seq} names a record version (a standby writes none).",
                )
            at = ev.pop("at", None)
            ev.pop("seq", None)
            detail = dict(ev.get("detail") or {})
            detail["standby"] = {"seq": seq, "at": at, "segment": seg.sha256[:16]}
            ev["detail"] = detail
            queue_event(session, ev)
        record(
            session,
            actor,
            AuditTag.STANDBY_LOG_MERGED,
            detail={
                "segment": seg.sha256,
                "copy": h["copy_id"],
                "generation": h["generation"],
                "base_seq": h["base_seq"],
                "first_seq": h["first_seq"],
                "last_seq": h["last_seq"],
                "head_chain": h["head_chain"],
                "events": len(seg.events),
            },
        )
        session.add(
            StandbyMerge(
                segment_sha256=seg.sha256,
                copy_id=h["copy_id"],
                generation=h["generation"],
                base_seq=h["base_seq"],
                last_seq=h["last_seq"],
                head_chain=bytes.fromhex(h["head_chain"]),
                events=len(seg.events),
                merged_by_id=actor.user_id,
            )
        )
        session.flush()
        done.append({"segment": seg.path.name, "events": len(seg.events)})
    return done


def _check_fork(session: Session, seg: Segment) -> None:
    h = seg.header
    earlier = session.scalars(
        select(StandbyMerge)
        .where(StandbyMerge.copy_id == h["copy_id"])
        .order_by(StandbyMerge.last_seq)
    ).all()
    if earlier:  # a later segment of a copy continues the one merged before it
        prev = earlier[-1]
        if prev.last_seq != h["base_seq"] or bytes(prev.head_chain).hex() != h["base_chain"]:
            raise StandbyError(
                f"{seg.path.name}: 前の区間（#{prev.last_seq} まで）の続きではありません。",
                f"{seg.path.name}: does not continue the segment merged before "
                f"(to #{prev.last_seq}).",
            )
        return
    ours = (
        GENESIS_CHAIN
        if h["base_seq"] == 0
        else session.scalars(
            select(AuditEvent.chain_hash).where(AuditEvent.seq == h["base_seq"])
        ).first()
    )
    if ours is None or bytes(ours).hex() != h["base_chain"]:
        raise StandbyError(
            f"{seg.path.name}: この監査証跡の #{h['base_seq']} から分かれた記録ではありません"
            "（別の診療所、または改ざんされた世代のもの）。",
            f"{seg.path.name}: it did not fork from event #{h['base_seq']} of this log "
            "(another clinic's, or from an altered generation).",
        )


__all__ = [
    "Copy",
    "Segment",
    "Source",
    "StandbyError",
    "StandbyMerge",
    "current",
    "export_segment",
    "merge_segments",
    "note_attempt",
    "read_segment",
    "refresh",
    "switch",
]
