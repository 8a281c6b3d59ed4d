"""Audit trail benchmark: audited writes/s, and `verify_log` throughput next to raw SHA-256.

    python bench/audit.py                      # SQLite and PostgreSQL (started on loopback)
    python bench/audit.py --backends sqlite --events 200000

1. **Audited writes/s**: patient registrations through the service layer, one transaction
   each (version row + audit event + head update, committed durably), 1 and 4 writer threads;
   and a nurse recording a vital sign, the commonest clinical write (the gate's patient and
   restriction look-ups, one sealed observation and its version, the audit event).
1a. **What the audit trail adds to a write**: the same registrations with the in-transaction
   append, and with it replaced by nothing (a baseline that exists only in this script),
   alternated; the difference in p50 and p99 latency is the audit's added cost per write.
1b. **Durable appends/s through the group-commit appender** — how every read (chart open,
   list, search) records its event: 1, 8 and 32 producer threads, each submitting one event
   and blocking until it is durable (the research's target T1: ≥ 1,000/s, p99 ≤ 25 ms at 32).
2. **Verify throughput**: a log of N events is appended, then `verify_log` recomputes it
   (read from the database, JSON, leaf hash, chain, Merkle frontier); in the same run, plain
   SHA-256 over the same bodies already in memory is the floor. Goal ≥ 100,000 events/s.
2a. **Verify on a generated clinic** (SQLite; ``--clinic``, default the M instance that
   ``bench/chart_open.py`` keeps, skipped if there is none): a copy of its database, whose
   ``record_version`` holds every version the clinic wrote (1.47M on M), with N events
   appended of which a third are writes naming one of those versions, as the trail records a
   write. Verification looks each named version up and compares its hash, so this is the
   figure for a real clinic's log; the log above names only the registrations' few versions.
   600,000 by default: past ``PARALLEL_MIN``, so ``mamori audit verify`` uses its worker
   processes, as it would on a year's log (~13M events).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # reuse tests/pg.py

from sqlalchemy import select, text

from mamori import migrate
from mamori.audit import trail
from mamori.audit.models import AuditEvent
from mamori.audit.trail import append, append_durably
from mamori.audit.verify import verify_log
from mamori.authz.actor import Actor
from mamori.authz.roles import Role
from mamori.clinic import service as clinic_service
from mamori.clinic.models import Clinic
from mamori.clinical.schemas import ObservationIn
from mamori.clinical.service import record_observation
from mamori.crypto.startup import open_keys
from mamori.db import Database
from mamori.models import open_database
from mamori.patients.schemas import PatientNew
from mamori.patients.service import register_patient
from mamori.settings import load_settings, write_instance_files

CLINIC = Path(__file__).resolve().parent / "results" / "instance-M-1"  # from chart_open.py
# the same person many times, knowingly: registered without the duplicate look-up
PATIENT = PatientNew(
    family_name="試験",
    given_name="太郎",
    family_kana="シケン",
    given_kana="タロウ",
    birth_date="1960-05-05",
    sex="male",
    register_anyway=True,
)  # type: ignore[arg-type]


def keyed_database(home: Path, url: str) -> Database:
    """A migrated database with its data keys loaded, as ``mamori serve`` opens it (patient
    rows are sealed, so registrations cannot run without keys). The KEK file goes to a
    temporary key directory outside the instance, as in production."""
    os.environ.setdefault("MAMORI_KEY_DIR", tempfile.mkdtemp(prefix="mamori-bench-keys-"))
    write_instance_files(home, database_url=url, port=8000)
    db = open_database(url)
    migrate.upgrade(db.engine)
    open_keys(db, load_settings(home), create=True)
    return db


def bench_actor(db: Database) -> Actor:
    with db.session(write=True) as s:
        clinic = clinic_service.create_clinic(s, name="ベンチ", institution_code="1310123455")
        user = clinic_service.add_staff(
            s, clinic, login_id="bench", display_name="x", role=Role.RECEPTION
        )
        s.commit()
        return clinic_service.actor_for(user, "bench")


def _timed(threads: int, per_thread: int, call: Callable[[], None]) -> tuple[float, float, float]:
    """``call`` run ``per_thread`` times on each of ``threads`` threads: (per second, p50 ms,
    p99 ms)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        mine = []
        for _ in range(per_thread):
            t0 = time.perf_counter()
            call()
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return (
        len(latencies) / elapsed,
        1000 * statistics.median(latencies),
        1000 * latencies[int(0.99 * (len(latencies) - 1))],
    )


def writes(db: Database, actor: Actor, threads: int, per_thread: int) -> tuple[float, float, float]:
    def register() -> None:
        with db.session(write=True) as s:
            register_patient(s, actor, PATIENT)
            s.commit()

    return _timed(threads, per_thread, register)


def observation_writes(
    db: Database, actor: Actor, threads: int, per_thread: int
) -> tuple[float, float, float]:
    """A nurse recording a vital sign, the commonest clinical write: the gate (the patient
    looked up in the actor's clinic, its restriction state), one sealed observation and its
    version, the audit event — one durable transaction each, across 50 registered patients."""
    with db.session(write=True) as s:
        clinic = s.get(Clinic, actor.clinic_id)
        assert clinic is not None
        nurse = clinic_service.add_staff(
            s, clinic, login_id=f"nurse-{uuid.uuid4().hex[:8]}", display_name="看護 花子",
            role=Role.NURSE,
        )  # fmt: skip
        patients = [register_patient(s, actor, PATIENT).id for _ in range(50)]
        s.commit()
        nurse_actor = clinic_service.actor_for(nurse, "bench")
    turn = itertools.cycle(patients)
    pulse = ObservationIn(
        category="vital-signs", code="8867-4", name="脈拍", value="72", unit="/min",
        ref_low="50", ref_high="100",
    )  # fmt: skip

    def record() -> None:
        with db.session(write=True) as s:
            record_observation(s, nurse_actor, next(turn), pulse)
            s.commit()

    return _timed(threads, per_thread, record)


def audit_share(db: Database, actor: Actor, n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """What the audit trail adds to a write: the same registrations (1 thread) with the
    in-transaction append as it runs, and with it replaced by nothing — a baseline that exists
    only here, to measure against. Alternated in four rounds so drift hits both alike.
    Returns (with audit, without): (writes/s, p50 ms, p99 ms) from all rounds together."""
    real = trail.append
    samples: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    try:
        for _ in range(4):
            for audited in (True, False):
                trail.append = real if audited else (lambda session, events: 0)
                samples[audited].append(writes(db, actor, 1, n // 4))
    finally:
        trail.append = real

    def merged(runs: list[tuple[float, float, float]]) -> tuple[float, ...]:
        return tuple(statistics.median(r[i] for r in runs) for i in range(3))

    return merged(samples[True]), merged(samples[False])


def appends(db: Database, producers: int, per_producer: int) -> tuple[float, float, float]:
    """Read-event appends through the group-commit appender (each caller waits for its own)."""
    event = {
        "v": 1,
        "tag": "patient:chart:viewed",
        "outcome": "success",
        "patients": [str(uuid.uuid4())],
        "actor": {"user": str(uuid.uuid4()), "role": "physician", "channel": "api"},
    }
    return _timed(producers, per_producer, lambda: append_durably(db, [dict(event)]))


def fill_log(db: Database, n: int) -> None:
    template = {
        "v": 1,
        "tag": "patient:chart:viewed",
        "outcome": "success",
        "actor": {
            "user": str(uuid.uuid4()),
            "role": "physician",
            "clinic": str(uuid.uuid4()),
            "channel": "api",
            "auth": "api-token",
            "ip": "192.0.2.10",
            "ua": "0123456789abcdef",
        },
    }
    done = 0
    while done < n:
        batch = min(10000, n - done)
        with db.session(write=True) as s:
            append(s, [{**template, "patients": [str(uuid.uuid4())]} for _ in range(batch)])
            s.commit()
        done += batch


def _cpu(pg: Any) -> tuple[float, float]:
    """CPU seconds used so far by this process and by the PostgreSQL server the bench started
    (its postmaster and every backend; 0 for SQLite, which runs in this process)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    server = 0.0
    if pg is not None and pg.datadir is not None:
        postmaster = (pg.datadir / "postmaster.pid").read_text().split()[0]
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if postmaster in (proc.name, fields[1]):
                server += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return usage.ru_utime + usage.ru_stime, server


def clinic_verify(source: Path, n: int, tmp: Path) -> tuple[int, int, float, float]:
    """(events, of them naming a record version, verify events/s in one process, as `mamori
    audit verify` runs it) on a copy of a generated clinic's database (never the original)."""
    copy = tmp / "clinic.db"
    for suffix in ("", "-wal"):
        if (source / f"mamori.db{suffix}").exists():
            shutil.copyfile(source / f"mamori.db{suffix}", tmp / f"clinic.db{suffix}")
    db = open_database(f"sqlite:///{copy}")
    migrate.upgrade(db.engine)
    writes = n // 3
    with db.session(write=False) as s:
        total = s.execute(text("SELECT count(*) FROM record_version")).scalar() or 1
        step = max(1, total // writes)
        sample = s.execute(
            text(
                "SELECT record_type, record_id, version, content_hash, patient_id "
                "FROM record_version WHERE rowid % :step = 0 LIMIT :n"
            ),
            {"step": step, "n": writes},
        ).all()
    actor = {"user": str(uuid.uuid4()), "role": "physician", "channel": "api", "auth": "totp"}

    def event(i: int) -> dict[str, object]:
        if i % 3 or i // 3 >= len(sample):
            return {"v": 1, "tag": "patient:chart:viewed", "outcome": "success",
                    "actor": actor, "patients": [str(uuid.uuid4())]}  # fmt: skip
        kind, rid, version, digest, pid = sample[i // 3]
        return {
            "v": 1,
            "tag": "record:updated",
            "outcome": "success",
            "actor": actor,
            "patients": [str(uuid.UUID(pid))] if pid else [],
            "records": [
                {"type": kind, "id": str(uuid.UUID(rid)), "version": version, "hash": digest}
            ],
        }

    for lo in range(0, n, 10000):
        with db.session(write=True) as s:
            append(s, [event(i) for i in range(lo, min(n, lo + 10000))])
            s.commit()
    size, one, default = verify_rates(db)
    db.dispose()
    copy.unlink()
    return size, min(writes, len(sample)), one, default


def verify_rates(db: Database) -> tuple[int, float, float]:
    """(events, verify events/s in one process, as `mamori audit verify` runs it — worker
    processes for a long log)."""
    rates = []
    for workers in (1, None):
        with db.session(write=False) as s:
            t0 = time.perf_counter()
            report = verify_log(s, workers=workers)
            rates.append(report.size / (time.perf_counter() - t0))
            assert report.ok, report.problems[:3]
    return report.size, rates[0], rates[1]


def verify_speed(db: Database) -> tuple[int, float, float, float]:
    """``verify_rates`` and SHA-256 events/s over the same bodies."""
    size, one, default = verify_rates(db)
    with db.session(write=False) as s:
        bodies = [bytes(b) for b in s.scalars(select(AuditEvent.body).order_by(AuditEvent.seq))]
    t0 = time.perf_counter()
    for b in bodies:
        hashlib.sha256(b).digest()
    t_sha = time.perf_counter() - t0
    return size, one, default, len(bodies) / t_sha


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--writes", type=int, default=2000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--clinic", type=Path, default=CLINIC, help="instance for the verify at scale")
    ap.add_argument("--clinic-events", type=int, default=600_000)
    args = ap.parse_args()
    pg = None
    rows = []
    grouped: list[tuple[str, dict[int, tuple[float, float, float]]]] = []
    shares: list[tuple[str, tuple[float, ...], tuple[float, ...]]] = []
    cpu: list[tuple[str, float, float]] = []
    observed: list[tuple[str, tuple[float, float, float], tuple[float, float, float]]] = []
    with tempfile.TemporaryDirectory(prefix="mamori-bench-audit-") as tmp:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite:///{Path(tmp) / 'audit.db'}"
            else:
                from tests.pg import PgServer

                pg = PgServer()
                base = pg.start()
                import psycopg
                from sqlalchemy.engine import make_url

                u = make_url(base)
                with psycopg.connect(
                    host=u.host, port=u.port, user=u.username, dbname="postgres", autocommit=True
                ) as con:
                    con.execute("CREATE DATABASE bench_audit")
                url = f"{base}/bench_audit"
            db = keyed_database(Path(tmp) / f"home-{backend}", url)
            actor = bench_actor(db)
            w1 = writes(db, actor, 1, args.writes)
            server = pg if backend == "postgresql" else None
            (client0, server0), done = _cpu(server), 4 * (args.writes // 4)
            w4 = writes(db, actor, 4, args.writes // 4)
            client1, server1 = _cpu(server)
            observed.append(
                (
                    backend,
                    observation_writes(db, actor, 1, args.writes),
                    observation_writes(db, actor, 4, args.writes // 4),
                )
            )
            cpu.append(
                (backend, (client1 - client0) * 1000 / done, (server1 - server0) * 1000 / done)
            )
            group = {n: appends(db, n, max(args.writes // n, 50)) for n in (1, 8, 32)}
            shares.append((backend, *audit_share(db, actor, args.writes)))
            fill_log(db, args.events)
            size, v_one, v_rate, sha_rate = verify_speed(db)
            rows.append((backend, w1, w4, size, v_one, v_rate, sha_rate))
            grouped.append((backend, group))
            db.dispose()
        if pg is not None:
            pg.stop()
        clinic = None
        if "sqlite" in args.backends and (args.clinic / "data" / "mamori.db").exists():
            print(f"verify on a copy of {args.clinic} …", flush=True)
            clinic = clinic_verify(args.clinic / "data", args.clinic_events, Path(tmp))
        elif "sqlite" in args.backends:
            print(f"no {args.clinic}: verify at a clinic's scale skipped (chart_open.py makes one)")
    print("\naudited writes (service layer, one durable transaction each)")
    print(f"{'db':<10} {'threads':>7} {'writes/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
    for backend, w1, w4, *_ in rows:
        for n, (rate, p50, p99) in ((1, w1), (4, w4)):
            print(f"{backend:<10} {n:>7} {rate:>9.0f} {p50:>7.2f} {p99:>7.2f}")
    print("\nobservation writes (a nurse records a vital sign; gate + version + audit event)")
    print(f"{'db':<10} {'threads':>7} {'writes/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
    for backend, o1, o4 in observed:
        for n, (rate, p50, p99) in ((1, o1), (4, o4)):
            print(f"{backend:<10} {n:>7} {rate:>9.0f} {p50:>7.2f} {p99:>7.2f}")
    print(
        "\nCPU per audited write (the 4-thread run): this process (one GIL) and the database "
        "server's processes"
    )
    cores = os.cpu_count() or 1
    print(
        f"{'db':<10} {'client ms':>9} {'server ms':>9} {'GIL limit/s':>11} "
        f"{f'{cores}-core limit/s':>16}"
    )
    for backend, client, server in cpu:
        print(
            f"{backend:<10} {client:>9.2f} {server:>9.2f} {1000 / client:>11.0f} "
            f"{cores * 1000 / (client + server):>16.0f}"
        )
    print("\nwhat the audit trail adds to a write (registrations, 1 thread, medians of 4 rounds)")
    print(
        f"{'db':<10} {'audited/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'no audit/s':>10} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'added p50':>9} {'added p99':>9}"
    )
    for backend, (r1, a50, a99), (r0, b50, b99) in shares:
        print(
            f"{backend:<10} {r1:>9.0f} {a50:>7.2f} {a99:>7.2f} {r0:>10.0f} {b50:>7.2f} "
            f"{b99:>7.2f} {a50 - b50:>9.2f} {a99 - b99:>9.2f}"
        )
    print("\ndurable read-event appends through the group-commit appender (one event per call)")
    print(f"{'db':<10} {'producers':>9} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
    for backend, group in grouped:
        for n, (rate, p50, p99) in group.items():
            print(f"{backend:<10} {n:>9} {rate:>9.0f} {p50:>7.2f} {p99:>7.2f}")
    print("\naudit verify vs raw SHA-256 over the same bodies (same run)")
    print(
        f"{'db':<10} {'events':>8} {'1 process':>10} {'verify ev/s':>12} {'sha256 ev/s':>12} "
        f"{'ratio':>6}"
    )
    for backend, _, _, size, v_one, v_rate, sha_rate in rows:
        print(
            f"{backend:<10} {size:>8} {v_one:>10.0f} {v_rate:>12.0f} {sha_rate:>12.0f} "
            f"{sha_rate / v_rate:>6.1f}"
        )
    if clinic is not None:
        size, named, one, rate = clinic
        print(f"\naudit verify on a generated clinic ({args.clinic.name}, SQLite)")
        print(f"{'events':>8} {'naming a version':>16} {'1 process':>10} {'verify ev/s':>12}")
        print(f"{size:>8} {named:>16} {one:>10.0f} {rate:>12.0f}")
    print(
        "\ngoals: ≥ 1,000 audited writes/s (durable appends: ≥ 1,000/s, p99 ≤ 25 ms at 32);"
        " verify ≥ 100,000 events/s"
    )


if __name__ == "__main__":
    main()
