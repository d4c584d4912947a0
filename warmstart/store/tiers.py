"""The RAM-resident tier: a model's weight files held in host memory, so that a start reads memory, not disk.

Two ways to hold a file, both measured by `warmstart bench load` (docs/store.md):
- mlock: a small holder process maps the files and mlocks them; the page cache keeps them, the path
  stays the same, nothing is copied, and the lock goes when the holder dies. Needs CAP_IPC_LOCK or an
  RLIMIT_MEMLOCK as large as the files.
- tmpfs: a copy on a tmpfs (default /dev/shm); needs no privilege, costs a copy into fresh memory,
  and the engine is pointed at the copy.
`auto` takes mlock where it is allowed, else tmpfs. A hold that does not fit in memory (after a reserve
for everything else), in the configured budget, or in the lock limit is refused with the reason,
before any memory is taken: never an OOM kill.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.engines.child import child_env
from warmstart.errors import StoreError
from warmstart.names import safe_name
from warmstart.store.manifest import model_files

GiB = 1 << 30
METHODS = ("auto", "mlock", "tmpfs")
_CAP_IPC_LOCK = 14
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000 ** 2, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1000 ** 3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000 ** 4, "tib": 1 << 40}


class TierRefused(StoreError):
    """A model cannot be held in RAM: not enough memory, budget or lock limit. The message says which."""


def parse_size(value: object) -> int:
    """Bytes from 123, "512MiB", "8GiB", "1.5GB"; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 8GiB or 512MiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError("expected a size such as 8GiB, 512MiB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


# ---- how much memory may be held: pure functions of what /proc and the cgroup say -------------------

def parse_meminfo(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


@dataclass(frozen=True)
class CgroupMemory:
    limit: int
    usage: int
    reclaimable: int  # file pages the kernel can drop (active_file + inactive_file)


def headroom(meminfo: dict[str, int], cgroup: CgroupMemory | None, reserve: int) -> tuple[int, str]:
    """Bytes that can still be held without pressure, and a phrase saying what bounds it."""
    available = meminfo.get("MemAvailable", meminfo.get("MemFree", 0))
    best = (available - reserve, f"MemAvailable {gib(available)} less the {gib(reserve)} reserve")
    if cgroup is not None:
        cg_free = cgroup.limit - (cgroup.usage - cgroup.reclaimable)
        if cg_free - reserve < best[0]:
            best = (cg_free - reserve, f"the cgroup memory limit {gib(cgroup.limit)} ({gib(cg_free)} free of it) "
                                       f"less the {gib(reserve)} reserve")
    return max(0, best[0]), best[1]


def read_cgroup_memory() -> CgroupMemory | None:
    """This process's cgroup memory limit (v2, else v1); None when there is none."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":
            base, files = Path("/sys/fs/cgroup") / rel.lstrip("/"), ("memory.max", "memory.current", "")
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / rel.lstrip("/")
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_")
        else:
            continue
        try:
            raw = (base / files[0]).read_text().strip()
            if raw == "max" or int(raw) >= 1 << 60:  # v1 writes "no limit" as a huge number
                continue
            stat = {}
            for item in (base / "memory.stat").read_text().splitlines():
                key, _, value = item.partition(" ")
                stat[key] = int(value)
            reclaimable = stat.get(files[2] + "active_file", 0) + stat.get(files[2] + "inactive_file", 0)
            return CgroupMemory(int(raw), int((base / files[1]).read_text()), reclaimable)
        except (OSError, ValueError):
            continue
    return None


def lock_limit() -> int | None:
    """Bytes one process may mlock: None when unlimited (CAP_IPC_LOCK or RLIMIT_MEMLOCK infinity)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:") and int(line.split()[1], 16) >> _CAP_IPC_LOCK & 1:
                return None
    except (OSError, ValueError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return None if soft == resource.RLIM_INFINITY else soft


def is_tmpfs(path: Path) -> bool:
    best, fstype = "", ""
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1].replace("\\040", " ")
            inside = str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount
            if inside and len(mount) >= len(best):
                best, fstype = mount, parts[2]
    except OSError:
        return False
    return fstype == "tmpfs"


# ---- the tier ---------------------------------------------------------------------------------------

@dataclass
class Resident:
    """One model's files held in RAM."""

    model: str
    files: tuple[Path, ...]
    bytes: int
    method: str
    since: float  # monotonic
    seconds_to_hold: float
    served: dict[Path, Path] = field(default_factory=dict)  # original -> the path a start should use
    holder: subprocess.Popen | None = None
    copy_dir: Path | None = None

    @property
    def alive(self) -> bool:
        return self.holder is None or self.holder.poll() is None

    def to_dict(self) -> dict:
        return {"method": self.method, "bytes": self.bytes, "hold_s": round(self.seconds_to_hold, 4),
                "alive": self.alive, "holder_pid": self.holder.pid if self.holder is not None else None}


class RamTier:
    """Holds models' files in RAM by mlock or tmpfs copy, within memory, budget and lock limits.

    Thread-safe: `hold` blocks for as long as reading the files takes; call it from a worker thread.
    """

    def __init__(self, *, method: str = "auto", max_bytes: int | None = None, reserve_bytes: int = 2 * GiB,
                 tmpfs_dir: Path | None = None, python: str = sys.executable) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}")
        self.method = method
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self.tmpfs_dir = tmpfs_dir or Path("/dev/shm") / f"warmstart-{os.getuid()}"
        self.python = python
        self._residents: dict[str, Resident] = {}
        self._lock = threading.Lock()

    # -- queries

    def resident(self, model: str) -> Resident | None:
        with self._lock:
            return self._residents.get(model)

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return sum(r.bytes for r in self._residents.values())

    def path_for(self, model: str, path: Path) -> Path:
        """The path a start of `model` should open: its RAM copy when it has one, else `path`."""
        r = self.resident(model)
        if r is None or not r.alive:
            return path
        return r.served.get(Path(path).resolve(), path)

    def choose_method(self, size: int) -> str:
        if self.method != "auto":
            return self.method
        limit = lock_limit()
        return "mlock" if limit is None or limit >= size else "tmpfs"

    def check_fits(self, model: str, size: int, method: str) -> None:
        """Raise TierRefused unless `size` more bytes can be held now; says which limit and how to lift it."""
        held = self.held_bytes
        if self.max_bytes is not None and held + size > self.max_bytes:
            raise TierRefused(
                f"cannot hold model '{model}' ({gib(size)}) in RAM: store.ram_max is {gib(self.max_bytes)} and "
                f"{gib(held)} is held by other models; raise store.ram_max or let another model go cold")
        room, bound = headroom(parse_meminfo(Path("/proc/meminfo").read_text()), read_cgroup_memory(),
                               self.reserve_bytes)
        if size > room:
            raise TierRefused(
                f"cannot hold model '{model}' ({gib(size)}) in RAM: only {gib(room)} can be held ({bound}); "
                "free memory, lower store.ram_reserve, or leave this model on disk")
        if method == "mlock":
            limit = lock_limit()
            if limit is not None and size > limit:
                raise TierRefused(
                    f"cannot lock model '{model}' ({gib(size)}) in RAM: RLIMIT_MEMLOCK is {limit >> 20} MiB and "
                    "warmstart lacks CAP_IPC_LOCK; raise it (`ulimit -l`, LimitMEMLOCK= in systemd, "
                    "--ulimit memlock=-1 in docker) or set store.ram_method = \"tmpfs\"")
        if method == "tmpfs":
            self.tmpfs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not is_tmpfs(self.tmpfs_dir):
                raise TierRefused(f"cannot copy model '{model}' to RAM: {self.tmpfs_dir} is not on a tmpfs; "
                                  "set store.tmpfs_dir to a tmpfs mount such as /dev/shm")
            free = shutil.disk_usage(self.tmpfs_dir).free
            if size > free:
                raise TierRefused(f"cannot copy model '{model}' ({gib(size)}) to RAM: the tmpfs at "
                                  f"{self.tmpfs_dir} has {gib(free)} free; grow it or use store.ram_method = \"mlock\"")

    # -- changes

    def hold(self, model: str, paths: list[Path], timeout: float = 600.0) -> Resident:
        """Hold `paths` (files, or folders: every file in them) in RAM for `model` (a no-op if already
        held); raises TierRefused or StoreError."""
        existing = self.resident(model)
        if existing is not None and existing.alive:
            return existing
        if existing is not None:
            self.release(model)
        roots = [Path(p).resolve() for p in paths]
        files = [f for root in roots for f in model_files(root)]
        size = sum(f.stat().st_size for f in files)
        method = self.choose_method(size)
        self.check_fits(model, size, method)
        started = time.monotonic()
        if method == "mlock":
            resident = self._lock_files(model, roots, files, size, timeout)
        else:
            resident = self._copy_files(model, roots, files, size)
        resident.seconds_to_hold = time.monotonic() - started
        with self._lock:
            self._residents[model] = resident
        return resident

    def release(self, model: str) -> bool:
        with self._lock:
            resident = self._residents.pop(model, None)
        if resident is None:
            return False
        if resident.holder is not None:
            _end_holder(resident.holder)
        if resident.copy_dir is not None:
            shutil.rmtree(resident.copy_dir, ignore_errors=True)
        return True

    def close(self) -> None:
        for model in list(self._residents):
            self.release(model)

    def _lock_files(self, model: str, roots: list[Path], files: list[Path], size: int, timeout: float) -> Resident:
        proc = subprocess.Popen([self.python, "-m", "warmstart.store.holder", *map(str, files)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=child_env(dict(os.environ)))
        assert proc.stdout is not None
        answer: list[bytes] = []
        reader = threading.Thread(target=lambda: answer.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        try:
            message = json.loads(answer[0]) if answer and answer[0] else {}
        except ValueError:
            message = {}
        if "locked" not in message:
            _end_holder(proc)
            why = message.get("error") or (f"it did not finish within {timeout:g} s" if reader.is_alive()
                                           else f"the holder exited with code {proc.returncode}")
            raise TierRefused(f"cannot hold model '{model}' in RAM: {why}")
        return Resident(model, tuple(files), size, "mlock", time.monotonic(), 0.0,
                        {root: root for root in roots}, holder=proc)

    def _copy_files(self, model: str, roots: list[Path], files: list[Path], size: int) -> Resident:
        target = self.tmpfs_dir / safe_name(model)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True, mode=0o700)
        served = {}
        try:
            for i, root in enumerate(roots):
                copy = target / f"{i}-{root.name}"
                if root.is_dir():  # same layout; links (a Hugging Face snapshot's) become the files they name
                    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".*"))
                else:
                    shutil.copyfile(root, copy)
                served[root] = copy
        except OSError as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise TierRefused(f"cannot copy model '{model}' to {target}: {exc.strerror or exc}") from exc
        return Resident(model, tuple(files), size, "tmpfs", time.monotonic(), 0.0, served, copy_dir=target)


def _end_holder(proc: subprocess.Popen) -> None:
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(5)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait(5)
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
