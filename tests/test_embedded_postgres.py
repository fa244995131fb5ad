"""The embedded server's shared_buffers are sized for the machine (forum.database): a quarter of the memory,
within bounds, written into a new data dir before its first start, given to an older data dir from its
next start, and never over an administrator's choice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from forum.database import SHARED_BUFFERS_MAX_MB, SHARED_BUFFERS_MIN_MB, memory_available, shared_buffers_mb

GIB = 2**30


def test_a_quarter_of_the_memory_within_bounds() -> None:
    assert shared_buffers_mb(16 * GIB) == 4096
    assert shared_buffers_mb(256 * 2**20) == SHARED_BUFFERS_MIN_MB, "never below initdb's default"
    assert shared_buffers_mb(1024 * GIB) == SHARED_BUFFERS_MAX_MB
    assert shared_buffers_mb(None) == SHARED_BUFFERS_MIN_MB, "unknown memory: initdb's default"
    memory = memory_available()
    assert memory is None or memory > 0


def _start_and_show(pgdata: Path, sql: str = "") -> str:
    """Start (or join) the embedded server in its own process, run ``sql``, print shared_buffers; the
    server stops when that process exits (the last one using it)."""
    script = (
        "import sys; from pathlib import Path; from forum import database\n"
        f"database.start_embedded_postgres(Path({str(pgdata)!r}))\n"
        f"server = database._embedded_servers[Path({str(pgdata)!r}).resolve()]\n"
        f"if {sql!r}: server.psql({sql!r})\n"
        "print(server.psql('SHOW shared_buffers;').split()[2])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_new_data_dir_starts_with_sized_buffers_and_an_administrators_choice_stays(tmp_path: Path) -> None:
    pgdata = tmp_path / "postgres"
    expected = f"{shared_buffers_mb(memory_available())}MB"
    assert _start_and_show(pgdata) == expected, "in effect from the first start: no restart"

    # A data dir made before the sizing existed: the line is not there yet.
    conf = pgdata / "postgresql.auto.conf"
    conf.write_text("".join(line for line in conf.read_text().splitlines(True) if "shared_buffers" not in line))
    assert _start_and_show(pgdata) == "128MB", "initdb's default on this start"
    assert _start_and_show(pgdata) == expected, "sized from the next start"

    assert _start_and_show(pgdata, "ALTER SYSTEM SET shared_buffers = '200MB';") == expected
    assert _start_and_show(pgdata) == "200MB", "an administrator's value is kept"
    assert _start_and_show(pgdata) == "200MB"
