"""A ledger of the engine processes warmstart started, so that a warmstart restarted after a crash
(kill -9, power loss of the parent only) finds any left behind and ends them.

Engine processes already die with warmstart (PR_SET_PDEATHSIG), but that reaches only the direct
child; an engine's own children (vLLM's engine core) can outlive it. Each engine runs in its own
process group, so ending the recorded group ends them all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger("warmstart.engines")


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir() if Path("/proc").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class ProcessLedger:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def record(self, pid: int, argv: list[str], replica: str) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            entry = {"pid": pid, "pgid": pid, "cmdline": _cmdline(pid) or " ".join(argv), "replica": replica,
                     "started": time.time(), "warmstart_pid": os.getpid()}
            (self.directory / f"{pid}.json").write_text(json.dumps(entry))
        except OSError as exc:  # a read-only data dir must not stop serving; only orphan cleanup is lost
            log.warning("cannot record engine process %s in %s: %s", pid, self.directory, exc)

    def forget(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            (self.directory / f"{pid}.json").unlink()

    def sweep(self) -> list[dict]:
        """End every recorded process group whose warmstart is gone; return what was ended."""
        ended: list[dict] = []
        if not self.directory.is_dir():
            return ended
        for path in sorted(self.directory.glob("*.json")):
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):
                _remove(path)
                continue
            owner = entry.get("warmstart_pid")
            if owner and owner != os.getpid() and "warmstart" in (_cmdline(owner) or ""):
                continue  # another live warmstart owns it (two servers sharing a data dir)
            pgid = int(entry["pgid"])
            leader = _cmdline(pgid)
            members = _group_members(pgid)
            # a reused pid in a different group is not ours: the group id must still be the recorded one
            if members and (leader is None or leader == entry.get("cmdline")):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                log.warning("ended engine process group %s left behind by an earlier warmstart (replica %s)",
                            pgid, entry.get("replica"))
                ended.append(entry)
            _remove(path)
        return ended


def _remove(path: Path) -> None:
    # a read-only data directory must not stop warmstart from starting; the entry is retried next time
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
