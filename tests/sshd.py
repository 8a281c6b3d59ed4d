"""A real OpenSSH server on loopback (Debian ``openssh-server``, installed by ``.ci/run``) for
the SFTP backup target: its own host key, one authorised client key, internal-sftp."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class Sshd:
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    root: Path  # where the backups land (the "remote" directory)
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sshd(where: Path) -> Sshd:
    where.mkdir(parents=True, exist_ok=True)
    os.chmod(where, 0o700)
    host_key, client_key = where / "host_ed25519", where / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30
        )
    auth = where / "authorized_keys"
    auth.write_text((client_key.with_suffix(".pub")).read_text())
    auth.chmod(0o600)
    port = _free_port()
    root = where / "remote"
    root.mkdir()
    config = where / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {where / "sshd.pid"}
AuthorizedKeysFile {auth}
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
Subsystem sftp internal-sftp
LogLevel ERROR
"""
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    known = where / "known_hosts"
    known.write_text(
        f"[127.0.0.1]:{port} {host_key.with_suffix('.pub').read_text().split(' ', 2)[0]} "
        f"{host_key.with_suffix('.pub').read_text().split(' ', 2)[1]}\n"
    )
    return Sshd(port, getpass.getuser(), client_key, known, root, proc)
