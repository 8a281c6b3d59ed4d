"""Sign-in cost: Argon2id (the production parameters) and a whole two-factor sign-in.

Measured side by side in one run:

* ``argon2id verify`` — one password check, RFC 9106's second profile (64 MiB, t=3, p=4);
* ``hmac-sha256`` — the keyed hash mamori uses for session tokens and recovery codes, as the
  "plain" baseline a session look-up costs;
* ``sign-in`` — password + TOTP through the HTTP API in-process (TestClient over the real app,
  SQLite): look-up, throttle check, Argon2id, session row, TOTP step check, audit events.

    python bench/login.py            # 20 sign-ins

Not a test: prints figures and ratios only.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.pop("MAMORI_ENV", None)  # the production Argon2 parameters, not the test suite's


def timed(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=20)
    args = ap.parse_args()

    import pyotp
    from starlette.testclient import TestClient

    from mamori.app import create_app
    from mamori.auth import passwords
    from mamori.instance import create_instance

    stored = passwords.hash_password("sakura-tsubaki-kamome 2026")
    argon = timed(lambda: passwords.verify(stored, "sakura-tsubaki-kamome 2026"), args.n)
    key = os.urandom(32)
    plain = timed(lambda: hmac.new(key, b"session:" + os.urandom(32), hashlib.sha256), 10000)

    with tempfile.TemporaryDirectory() as tmp:
        created = create_instance(
            Path(tmp) / "i",
            clinic_name="ベンチ",
            institution_code="1310123455",
            database_url=None,
            port=8000,
        )
        inst = created.instance
        client = TestClient(create_app(inst.settings, inst.db), base_url="https://testserver")
        # one account per sign-in: a TOTP code is accepted once per account and step
        accounts = []
        for i in range(args.n):
            out = subprocess.run(
                [
                    *(sys.executable, "-m", "mamori", "staff", "add", f"dr{i}"),
                    *("--name", f"医師{i}", "--role", "physician"),
                    *("--instance", str(inst.settings.home)),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            login = {"login_id": f"dr{i}", "password": out.split("initial password:")[1].split()[0]}
            client.cookies.clear()
            csrf = client.post("/api/v1/auth/login", json=login).json()["csrf_token"]
            enrol = client.post("/api/v1/auth/enrol/totp", headers={"x-csrf-token": csrf})
            seed = enrol.json()["secret"]
            r = client.post(
                "/api/v1/auth/enrol/totp/confirm",
                json={"code": pyotp.TOTP(seed).at(time.time() - 30)},
                headers={"x-csrf-token": csrf},
            )
            assert r.status_code == 200, r.text
            accounts.append((login, seed))
        sign_ins = []
        for login, seed in accounts:
            client.cookies.clear()
            t0 = time.perf_counter()
            r = client.post("/api/v1/auth/login", json=login)
            assert r.status_code == 200, r.text
            r = client.post(
                "/api/v1/auth/totp",
                json={"code": pyotp.TOTP(seed).now()},
                headers={"x-csrf-token": r.json()["csrf_token"]},
            )
            sign_ins.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
        client.close()
        inst.db.dispose()

    a, p, s = statistics.median(argon), statistics.median(plain), statistics.median(sign_ins)
    print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}")
    print(f"argon2id verify (64 MiB, t=3, p=4): p50 {a * 1000:8.1f} ms")
    print(
        f"hmac-sha256 token look-up hash:     p50 {p * 1e6:8.1f} µs   "
        f"(argon2id ÷ hmac: {a / p:,.0f}×)"
    )
    print(f"two-factor sign-in (HTTP, in-proc): p50 {s * 1000:8.1f} ms   ({1 / s:.1f} sign-ins/s)")
    print(f"share of a sign-in spent in Argon2id: {a / s:.0%}")


if __name__ == "__main__":
    main()
