"""Chart-open benchmark: mamori vs a plain baseline, side by side in one run.

Generates (or reuses) a synthetic clinic, starts ``mamori serve`` and the plain baseline
(``bench/baseline_app.py``) on loopback, and opens charts (patient summary + last 20 notes +
current medications + allergies + recent labs and vitals) at several concurrency levels
against both, alternating targets. Prints p50/p95 latency, requests/s and the ratios.

mamori runs as deployed: TLS on (its generated local certificate), and the load is a
physician **signed in** through the real flow (password + TOTP enrolment → session cookie),
so every request is a session look-up, the permission checks, the gate and the audit event.
The baseline serves the same chart with the same certificate, so TLS costs both sides alike.

    python bench/chart_open.py                  # M clinic (≈10k patients, 116k visits)
    python bench/chart_open.py --size S         # quicker
    python bench/chart_open.py --instance DIR   # reuse an instance that already holds data
    python bench/chart_open.py --before SRC     # also serve another mamori tree (SRC: its
                                                # src/ folder), alternating: before vs after

The client is Python threads with keep-alive connections on the same 2-core machine, so
absolute numbers include client cost; the ratio is what later issues must keep ≤ 1.5.
Both databases are read into the page cache before the warm-up requests (the steady state of
a clinic server; a cold cache would time the disk).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mamori(*args: str, home: Path | None = None, env: dict[str, str] | None = None) -> str:
    cmd = [sys.executable, "-m", "mamori", *args]
    if home is not None:
        cmd += ["--instance", str(home)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600, env=env)
    return out.stdout


def prepare(size: str, seed: int, instance: Path | None) -> tuple[Path, str, str]:
    """An instance with synthetic data, and a physician's login ID and initial password."""
    if instance is not None:
        home = instance
    else:
        home = RESULTS / f"instance-{size}-{seed}"
        if not (home / "mamori.toml").exists():
            RESULTS.mkdir(parents=True, exist_ok=True)
            mamori(
                "init",
                str(home),
                "--clinic-name",
                "ベンチ診療所（合成）",
                "--institution-code",
                "1310123455",
            )
            t0 = time.monotonic()
            print(f"generating {size} clinic (seed {seed}) …", flush=True)
            mamori("synth", "--size", size, "--seed", str(seed), "--no-documents", home=home)
            print(f"  generated in {time.monotonic() - t0:.0f} s", flush=True)
    mamori("db", "upgrade", home=home)  # a kept instance may predate the current schema
    login, password = add_physician(home, f"bench-{os.getpid()}")
    return home, login, password


def add_physician(home: Path, login: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """A physician account for the load, and its initial password."""
    out = mamori(
        "staff", "add", login, "--name", "ベンチ医師", "--role", "physician", home=home, env=env
    )
    return login, out.split("initial password:")[-1].strip().split()[0]


def https(home: Path, port: int, timeout: float) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(home / "tls" / "cert.pem"))
    return http.client.HTTPSConnection("localhost", port, timeout=timeout, context=ctx)


def sign_in(home: Path, port: int, login: str, password: str) -> dict[str, str]:
    """Password, TOTP enrolment, and the session cookie a browser would then send."""
    import pyotp

    conn = https(home, port, 10)
    cookies: dict[str, str] = {}
    csrf = ""

    def post(path: str, body: dict[str, str]) -> dict[str, object]:
        nonlocal csrf
        headers = {"content-type": "application/json", "x-csrf-token": csrf}
        if cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        conn.request("POST", path, body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        data = json.loads(resp.read() or b"{}")
        for raw in resp.headers.get_all("set-cookie") or []:
            name, _, rest = raw.partition("=")
            cookies[name] = rest.split(";")[0]
        assert resp.status == 200, data
        csrf = str(data.get("csrf_token", csrf))
        return dict(data)

    stage = post("/api/v1/auth/login", {"login_id": login, "password": password})["stage"]
    if stage == "new-password":  # an initial password: the first sign-in replaces it
        own = f"ベンチ用の長い合言葉-{os.getpid()}-x9"
        post("/api/v1/auth/password/initial", {"password": own})
    seed = str(post("/api/v1/auth/enrol/totp", {})["secret"])
    post("/api/v1/auth/enrol/totp/confirm", {"code": pyotp.TOTP(seed).now()})
    conn.close()
    return {"cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


class Target:
    def __init__(
        self,
        name: str,
        cmd: list[str],
        path: str,
        headers: dict[str, str],
        home: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.cmd, self.path, self.headers, self.home = name, cmd, path, headers, home
        self.port = int(cmd[cmd.index("--port") + 1])
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env
        )
        for _ in range(300):
            try:
                c = https(self.home, self.port, 1)
                c.request("GET", "/")
                c.getresponse().read()
                c.close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def run_load(target: Target, ids: list[str], concurrency: int, seconds: float) -> dict[str, float]:
    """``concurrency`` clients opening random charts for ``seconds``. A client that fails (the
    server went away, a timeout) ends the cell with that client's error, not with a median of
    whatever the others managed."""
    latencies: list[float] = []
    errors = 0
    failures: list[BaseException] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        mine: list[float] = []
        bad = 0
        try:
            conn = https(target.home, target.port, 30)
            while time.monotonic() < stop_at:
                pid = rng.choice(ids)
                t0 = time.perf_counter()
                conn.request("GET", target.path.format(pid=pid), headers=target.headers)
                resp = conn.getresponse()
                resp.read()
                mine.append(time.perf_counter() - t0)
                if resp.status != 200:
                    bad += 1
            conn.close()
        except Exception as exc:  # reported by run_load once every client has ended
            with lock:
                failures.append(exc)
        with lock:
            latencies.extend(mine)
            errors += bad

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    if failures:
        raise RuntimeError(
            f"{target.name}: {len(failures)} of {concurrency} clients failed at concurrency "
            f"{concurrency}: {failures[0]!r}"
        ) from failures[0]
    if not latencies:
        raise RuntimeError(f"{target.name}: no request completed in {seconds} s")
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
    }


def warm_files(places: list[Path]) -> None:
    """Read every file of ``places`` (directories, or glob patterns) once, into the page cache."""
    t0 = time.monotonic()
    total = 0
    for place in places:
        found = sorted(place.iterdir()) if place.is_dir() else sorted(place.parent.glob(place.name))
        for path in found:
            if path.is_file():
                with path.open("rb") as f:
                    while chunk := f.read(8 << 20):
                        total += len(chunk)
    print(f"page cache warmed: {total / 1e6:,.0f} MB in {time.monotonic() - t0:.1f} s", flush=True)


PLAIN_TABLES = (
    "patient",
    "coverage",
    "allergy_intolerance",
    "condition",
    "medication_request",
    "progress_note",
    "observation",
)


def plain_copy(home: Path) -> Path:
    """The baseline's database: the same rows as the instance, *decrypted*, in ordinary
    columns — what an EHR without encryption at rest stores. Made once per instance."""
    target = home.parent / f"{home.name}-plain.db"
    if target.exists() and _has_every_column(target):
        return target
    for old in home.parent.glob(f"{home.name}-plain.db*"):  # made by an earlier version
        old.unlink()
    from sqlalchemy import inspect, select

    from mamori.instance import open_instance
    from mamori.models import record_kinds

    print("making the baseline's plaintext copy …", flush=True)
    t0 = time.monotonic()
    inst = open_instance(str(home))
    tmp = target.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    out = sqlite3.connect(tmp)
    out.execute("PRAGMA journal_mode=WAL")
    models = {m.__tablename__: m for m in record_kinds()}  # type: ignore[attr-defined]
    for name in PLAIN_TABLES:
        model = models[name]
        cols = _plain_columns(model, inspect)
        out.execute(f"CREATE TABLE {name} ({', '.join(cols)})")
        insert = f"INSERT INTO {name} VALUES ({', '.join('?' for _ in cols)})"  # noqa: S608
        with inst.db.session(write=False) as s:
            batch = []
            for row in s.scalars(select(model).execution_options(yield_per=5000)):
                batch.append([_plain(getattr(row, c)) for c in cols])
                if len(batch) >= 5000:
                    out.executemany(insert, batch)
                    batch.clear()
            out.executemany(insert, batch)
        if name == "patient":
            out.execute("CREATE UNIQUE INDEX ix_patient_id ON patient (id)")
        else:
            out.execute(f"CREATE INDEX ix_{name}_patient ON {name} (patient_id, created_at)")
    out.execute("CREATE INDEX ix_obs ON observation (patient_id, effective_at)")
    out.execute("CREATE INDEX ix_med ON medication_request (patient_id, issued_on)")
    out.commit()
    out.close()
    inst.db.dispose()
    tmp.rename(target)
    print(f"  made in {time.monotonic() - t0:.0f} s", flush=True)
    return target


def _plain_columns(model: type, inspect: Any) -> list[str]:
    """Every column of mamori's output (content, version, hash, who and when), without the
    ciphertext and the blind indexes: the same JSON on both sides."""
    hidden = {"sealed", *(spec.column for spec in getattr(model, "__blind_indexes__", ()))}
    mapped = [a.key for a in inspect(model).column_attrs if a.key not in hidden]
    return list(dict.fromkeys(["id", "status", "created_at", *model.__content_fields__, *mapped]))  # type: ignore[attr-defined]


def _has_every_column(db: Path) -> bool:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return "content_hash" in {r[1] for r in con.execute("PRAGMA table_info(patient)")}
    finally:
        con.close()


def _plain(value: object) -> object:
    import datetime as dt
    import json
    import uuid

    if isinstance(value, uuid.UUID):
        return value.hex  # the same text form mamori's SQLite tables use
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def side_by_side(
    results: dict[str, dict[int, dict[str, float]]],
    rows: list[dict[str, Any]],
    old_name: str,
    new_name: str,
    labels: tuple[str, str],
) -> None:
    """Two targets' cells, p50 and throughput, one line per concurrency; the one that is not
    the plain ``mamori`` target is kept in the saved rows under its name."""
    a, b = labels
    print(
        f"{'conc':>4} | {a + ' p50':>10} {b + ' p50':>10} {b + ' ÷ ' + a:>15} |"
        f" {a + ' req/s':>12} {b + ' req/s':>12}"
    )
    for c in results["mamori"]:
        old, new = results[old_name][c], results[new_name][c]
        print(
            f"{c:>4} | {old['p50_ms']:>8.1f}ms {new['p50_ms']:>8.1f}ms "
            f"{new['p50_ms'] / old['p50_ms']:>15.2f} | {old['rps']:>12.0f} {new['rps']:>12.0f}"
        )
        other = new_name if old_name == "mamori" else old_name
        next(r for r in rows if r["concurrency"] == c)[other] = results[other][c]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="M")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instance", type=Path)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument(
        "--before", type=Path, help="another mamori source tree (its src/) served beside, A/B"
    )
    ap.add_argument(
        "--detection-seconds",
        type=int,
        help="also serve this tree with the detector's immediate pass every N s (issue 27: what"
        " detection costs a chart open); the plain mamori target then runs none during the run",
    )
    ap.add_argument(
        "--before-instance",
        type=Path,
        help="a copy of the instance at the other tree's schema (default: the same instance)",
    )
    args = ap.parse_args()

    home, login, password = prepare(args.size, args.seed, args.instance)
    from mamori.web.tls import local_certificate

    cert, key = local_certificate(home)
    db = plain_copy(home)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    counts = {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608
        for t in ("patient", "progress_note", "observation")
    }
    raw = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT patient_id FROM progress_note ORDER BY random() LIMIT 2000"
        )
    ]
    con.close()
    ids = [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in raw]
    print(f"dataset: {counts}")

    def plain(name: str, *extra: str) -> Target:
        port = str(free_port())
        cmd = [sys.executable, str(HERE / "baseline_app.py"), "--db", str(db), "--port", port]
        cmd += ["--tls-cert", str(cert), "--tls-key", str(key), *extra]
        return Target(name, cmd, "/chart/{pid}", {}, home)

    mp = free_port()
    mamori_cmd = [sys.executable, "-m", "mamori", "serve", "--instance", str(home)]
    quiet = {**os.environ, "MAMORI_DETECTION_SECONDS": "86400"} if args.detection_seconds else None
    targets = [
        plain("baseline"),
        plain("framework", "--framework"),
        Target(
            "mamori",
            [*mamori_cmd, "--port", str(mp), "--without-backups"],  # a bench copy, no backups
            "/api/v1/patients/{pid}/chart",
            {},
            home,
            quiet,
        ),
    ]
    detect: Target | None = None
    if args.detection_seconds:
        # the same tree and instance with the immediate pass every N seconds; started only for
        # its own cells, so its passes never run beside another target's
        detect = Target(
            "detect",
            [*mamori_cmd, "--port", str(free_port()), "--without-backups"],
            "/api/v1/patients/{pid}/chart",
            {},
            home,
            {**os.environ, "MAMORI_DETECTION_SECONDS": str(args.detection_seconds)},
        )
    if args.before is not None:
        # the same instance served by the other tree: alternating cells, one run, one machine
        bp = free_port()
        env = {**os.environ, "PYTHONPATH": str(args.before.resolve())}
        before_home = (args.before_instance or home).resolve()
        before_cmd = [sys.executable, "-m", "mamori", "serve", "--instance", str(before_home)]
        before = Target(
            "before",
            [*before_cmd, "--port", str(bp), "--without-backups"],  # a bench copy, no backups
            "/api/v1/patients/{pid}/chart",
            {},
            before_home,
            env,
        )
        targets.insert(2, before)
    results: dict[str, dict[int, dict[str, float]]] = {t.name: {} for t in targets}
    for t in targets:
        t.start()
    targets[-1].headers = sign_in(home, mp, login, password)
    if detect is not None:
        results["detect"] = {}
        detect.start()
        login3, password3 = add_physician(home, f"bench-{os.getpid()}-detect", None)
        detect.headers = sign_in(home, detect.port, login3, password3)
        detect.stop()
    if args.before is not None:
        # a second physician: the first one's TOTP step is spent in this 30-second window
        login2, password2 = add_physician(before_home, f"bench-{os.getpid()}-before", env)
        targets[2].headers = sign_in(before_home, bp, login2, password2)
    try:
        # Both databases read into the page cache first, as on a server that has been up a
        # while (23 GB here against a 3 GB M database): otherwise mamori's larger file (the
        # versions, the ciphertext's overhead) is still being paged in from disk during the
        # timed cells, and the ratio measures the disk as much as the code.
        warm_files([home / "data", db.parent / f"{db.name}*"])
        for t in targets:  # then the servers' own caches, on every side
            run_load(t, ids, 2, 2.0)
        for c in (int(x) for x in args.concurrency.split(",")):
            for t in targets:
                results[t.name][c] = run_load(t, ids, c, args.seconds)
            if detect is not None:
                detect.start()
                try:
                    run_load(detect, ids, 2, 2.0)
                    results["detect"][c] = run_load(detect, ids, c, args.seconds)
                finally:
                    detect.stop()
    finally:
        for t in targets:
            t.stop()

    print(
        f"\nchart open, {args.size} clinic, {args.seconds:.0f} s per cell, SQLite, TLS on all,"
        " mamori signed in (session cookie, 2FA)\n"
        "baseline: bare Starlette + sqlite3; framework: the same queries through FastAPI and\n"
        "pydantic (mamori's stack), no security; mamori: the whole security stack\n"
    )
    cells = "p50      p95    req/s"
    print(
        f"{'conc':>4} | {'baseline ' + cells:>30} | {'framework ' + cells:>31} | "
        f"{'mamori ' + cells:>28} | {'p50 ×':>6} {'thr ÷':>6} | {'÷ framework':>11}"
    )
    rows = []
    for c in results["mamori"]:
        b, f, m = (results[name][c] for name in ("baseline", "framework", "mamori"))
        row = {
            "concurrency": c,
            "baseline": b,
            "framework": f,
            "mamori": m,
            "p50_ratio": m["p50_ms"] / b["p50_ms"],
            "p95_ratio": m["p95_ms"] / b["p95_ms"],
            "throughput_ratio": b["rps"] / m["rps"],
            "framework_p50_ratio": f["p50_ms"] / b["p50_ms"],
            "security_p50_ratio": m["p50_ms"] / f["p50_ms"],
        }
        rows.append(row)

        def cell(r: dict[str, float]) -> str:
            return f"{r['p50_ms']:>8.1f}ms {r['p95_ms']:>6.1f}ms {r['rps']:>7.0f}"

        print(
            f"{c:>4} | {cell(b):>30} | {cell(f):>31} | {cell(m):>28} | "
            f"{row['p50_ratio']:>6.2f} {row['throughput_ratio']:>6.2f} | "
            f"{row['security_p50_ratio']:>11.2f}"
        )
        if b["errors"] or f["errors"] or m["errors"]:
            errors = {t.name: results[t.name][c]["errors"] for t in targets}
            print(f"     errors: {errors}")
    if args.before is not None:
        print(f"\nbefore ({args.before}) vs this tree, same data, alternating cells:")
        side_by_side(results, rows, "before", "mamori", ("before", "after"))
    if detect is not None:
        print(
            f"\nthe detector's immediate pass every {args.detection_seconds} s (detect) against"
            " none during the run (mamori), same tree and data:"
        )
        side_by_side(results, rows, "mamori", "detect", ("mamori", "detect"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"chart_open-{args.size}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"size": args.size, "dataset": counts, "rows": rows}, indent=2))
    print(
        "\n(p50 ×: mamori ÷ baseline latency, the goal's ratio; thr ÷: baseline ÷ mamori"
        " throughput;\n ÷ framework: mamori ÷ framework latency, the security stack's own"
        f" cost; saved {out})"
    )


if __name__ == "__main__":
    main()
