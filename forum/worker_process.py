"""``forum serve``'s embedded worker: a ``forum worker`` in a child process, at a lower CPU priority.

In the server's own event loop the worker's model calls, batch writes, grouping and cluster
descriptions took the requests' loop and cores: posting's p99 was six times its idle value while the
worker was busy (docs/benchmarks.md). With ``FORUM_WORKER_IN_SERVER`` (the default) each server process
now starts and supervises one child, ``python -m forum.worker_process``, which is ``forum worker``:

- niced by ``NICENESS`` once its models are loaded, on one torch/BLAS thread: the server's requests
  (and PostgreSQL) get the cores first, and the worker takes what is left;
- on the server's settings (the same environment) and database URL: with the embedded PostgreSQL the
  server started, the child connects to it and never starts or stops it;
- restarted when it exits, after ``FIRST_DELAY`` s doubling to ``MAX_DELAY`` (back to the first once
  it ran for ``MAX_DELAY``);
- stopped (SIGTERM, then SIGKILL after ``STOP_SECONDS``) when the server shuts down, and stopping by
  itself when its server is gone, even killed (``PR_SET_PDEATHSIG`` on Linux, and a poll of its parent).

Jobs live in PostgreSQL: a child killed mid-batch leaves its jobs to be picked again once their
heartbeat is ``forum.worker.HEARTBEAT_TIMEOUT`` old. The child loads its own copy of the models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger("forum.worker")

NICENESS = 10  # added to the server's; 19 is the lowest priority (docs/benchmarks.md weighs the choice)
FIRST_DELAY = 1.0
MAX_DELAY = 60.0
STOP_SECONDS = 20.0  # a clean stop finishes the batch in hand; then it is killed (its jobs are picked again)
PARENT_POLL_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1
WARM_UP_TEXTS = ("Pause a scooter rental", "Pausar el alquiler de un patinete")


class WorkerProcess:
    """Runs the child and restarts it until :meth:`stop`; ``state`` is what ``/health`` reports."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.state = "starting"  # running (its process is alive), restarting, stopped
        self.pid: int | None = None
        self.restarts = 0
        self._stopping = asyncio.Event()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "forum.worker_process", str(os.getpid())]

    async def run(self) -> None:
        delay = FIRST_DELAY
        env = {**os.environ, "FORUM_DATABASE_URL": self.database_url, "OMP_NUM_THREADS": "1"}
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                # Its own session: Ctrl-C in the terminal reaches the server, which stops the child itself.
                proc = await asyncio.create_subprocess_exec(*self.command(), env=env, start_new_session=True)
            except OSError:
                logger.exception("the embedding worker process could not be started")
                code: int | None = None
            else:
                self.pid, self.state = proc.pid, "running"
                code = await self._wait(proc)
                self.pid = None
            if self._stopping.is_set():
                break
            if time.monotonic() - started >= MAX_DELAY:
                delay = FIRST_DELAY
            self.state = "restarting"
            self.restarts += 1
            logger.warning("the embedding worker process exited (code %s): restarting it in %.0f s", code, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, MAX_DELAY)
        self.state = "stopped"

    async def _wait(self, proc: asyncio.subprocess.Process) -> int:
        exited = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not exited.done():
            proc.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(exited), STOP_SECONDS)
            except TimeoutError:
                logger.warning("the embedding worker process did not stop in %.0f s: killed", STOP_SECONDS)
                proc.kill()
                await exited
        return exited.result()

    def stop(self) -> None:
        self._stopping.set()


def _exit_with(parent: int) -> None:
    """SIGTERM to this process (a clean stop) as soon as ``parent`` is gone, however it went."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch() -> None:  # also catches a parent that died before prctl, and other systems
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> None:
    _exit_with(int(sys.argv[1]))
    from forum.cli import main as forum
    from forum.encoding import PostEmbedder
    from forum.settings import Settings

    # The models load and warm up (a first call's lazy state: USE traces its graph) at the server's
    # priority, beside its own load: niced from the start, this waited for the server's and the first posts
    # for it. `forum worker` then finds them loaded (one encoder per configuration per process).
    embedder = PostEmbedder.from_spec(Settings.from_env().embedding_model)
    embedder.load()
    for encoder in embedder.encoders.values():
        encoder.encode(list(WARM_UP_TEXTS))
    os.nice(NICENESS)
    forum(["worker"], prog_name="forum")


if __name__ == "__main__":
    main()
