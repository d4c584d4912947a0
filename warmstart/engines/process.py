"""Engine processes: each in its own session, ended with its whole process group, never outliving warmstart."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from warmstart.engines.child import child_env
from warmstart.engines.ledger import ProcessLedger
from warmstart.errors import EngineError
from warmstart.names import safe_name

if TYPE_CHECKING:
    import aiohttp

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A free TCP port on loopback for an engine to listen on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica_log_path(data_dir: Path, replica: str) -> Path:
    return data_dir / "logs" / (safe_name(replica) + ".log")


def read_from(path: Path, offset: int) -> bytes:
    """Up to 1 MiB of an engine's log from `offset` (nothing when it cannot be read yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(1 << 20)
    except OSError:
        return b""


def die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM it when warmstart dies, even by kill -9.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _die_with_parent_idle() -> None:
    # Also: run only on CPU time nothing else wants (a runtime preparing in the background)
    die_with_parent()
    with contextlib.suppress(Exception):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def can_restore_priority() -> bool:
    """Whether a process moved to SCHED_IDLE can be given normal priority back (root, CAP_SYS_NICE,
    or RLIMIT_NICE allowing nice 0); only then is it safe to prepare runtimes at idle priority."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    if os.geteuid() == 0:
        return True
    import resource

    return resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20


def restore_priority(pid: int) -> bool:
    """Every thread of `pid` back to the normal scheduling policy; False if that was refused."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return False
    ok = True
    for tid in tids:
        try:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        except ProcessLookupError:
            continue
        except OSError:
            ok = False
    return ok


class ManagedProcess:
    """One engine process: spawned with a report pipe, its output in a log file."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path, reports: asyncio.StreamReader | None,
                 spawned_at: float) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.log_path = log_path
        self.reports = reports
        self.spawned_at = spawned_at
        self.base_url = ""
        # the liveness probe: a GET that a working engine answers with 200 (the gateway asks when it goes silent)
        self.health_path = "/health"
        # for engines that report it: how many requests the engine is still working on (None: unknown)
        self.count_active: Callable[[aiohttp.ClientSession], Awaitable[int | None]] | None = None
        self.count_interval = 0.1  # seconds between two such counts
        self._ledger: ProcessLedger | None = None
        self._reports_transport: asyncio.BaseTransport | None = None

    @classmethod
    async def spawn(cls, argv: Sequence[str], *, env: dict[str, str], log_path: Path,
                    with_reports: bool = False, cwd: str | None = None, with_stdin: bool = False,
                    idle: bool = False, ledger: ProcessLedger | None = None, replica: str = "") -> ManagedProcess:
        import time

        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - handed to the child
        except OSError as exc:
            raise EngineError(f"cannot write the engine log {log_path}: {exc.strerror or exc}; the data directory "
                              "must be writable: free disk space or fix its permissions (server.data_dir)") from None
        read_fd = write_fd = -1
        pass_fds: tuple[int, ...] = ()
        env = child_env(env)
        if with_reports:
            read_fd, write_fd = os.pipe()
            pass_fds = (write_fd,)
            env = {**env, "WARMSTART_REPORT_FD": str(write_fd)}
        spawned_at = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if with_stdin else asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log, env=env, cwd=cwd,
                pass_fds=pass_fds, start_new_session=True,
                preexec_fn=_die_with_parent_idle if idle else die_with_parent,
            )
        except OSError as exc:
            if with_reports:
                os.close(read_fd)
                os.close(write_fd)
            raise EngineError(f"could not start {argv[0]}: {exc.strerror or exc}") from exc
        finally:
            log.close()
        reports = None
        transport = None
        if with_reports:
            os.close(write_fd)
            loop = asyncio.get_running_loop()
            reports = asyncio.StreamReader(limit=1 << 20)
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reports),
                                                        os.fdopen(read_fd, "rb", buffering=0))
        managed = cls(proc, log_path, reports, spawned_at)
        managed._reports_transport = transport
        if ledger is not None:
            ledger.record(proc.pid, list(argv), replica)
            managed._ledger = ledger
        return managed

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def close_reports(self) -> None:
        """Close the report pipe once its last report is read: uvloop does not close a pipe at EOF (nor
        when the writer exits), so each replica would leak the fd until the garbage collector ran."""
        if self._reports_transport is not None:
            self._reports_transport.close()
            self._reports_transport = None

    async def wait_exit(self) -> int:
        code = await self._proc.wait()
        # what it started (vLLM's engine core and workers) must not outlive it
        self._signal_group(signal.SIGKILL)
        if self._ledger is not None:
            self._ledger.forget(self.pid)
        return code

    async def send(self, data: bytes) -> None:
        """Write to the child's stdin (spawned with_stdin): how a waiting runtime gets its model."""
        stdin = self._proc.stdin
        if stdin is None:
            raise EngineError("this engine process takes no input")
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise EngineError(f"engine process {self.pid} is gone: {exc}") from exc

    def move_log(self, path: Path) -> None:
        """Give the log a new name (the child keeps writing to the same file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.log_path, path)
        self.log_path = path

    async def read_reports(self) -> AsyncIterator[dict]:
        """JSON lines the child writes on its report pipe, until it closes the pipe or exits."""
        assert self.reports is not None
        while True:
            line = await self.reports.readline()
            if not line:
                self.close_reports()
                return
            with contextlib.suppress(ValueError):
                yield json.loads(line)

    async def stop(self, timeout: float) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `timeout`."""
        if self._proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), timeout)
            except TimeoutError:
                pass
        # children the engine started (vLLM's engine core) go with the group
        self._signal_group(signal.SIGKILL)
        await self.wait_exit()

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)

    async def abandon(self) -> None:
        """Kill a start that failed or was cancelled, and reap it even if the caller is cancelled again."""
        self.kill()
        with contextlib.suppress(Exception):
            await asyncio.shield(self.wait_exit())

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def log_tail(self, lines: int = 20) -> str:
        try:
            data = self.log_path.read_bytes()[-8192:]
        except OSError:
            return ""
        text = data.decode("utf-8", "replace").strip().splitlines()
        return "\n".join(text[-lines:])
