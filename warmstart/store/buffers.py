"""Host buffers the loader reads into: page-aligned anonymous memory, backed by huge pages where the
kernel allows, pre-faulted once and reused from load to load.

Why: reading into fresh, never-touched memory is bounded by first-touch page faults (1.35-1.9 GB/s
measured), not by the disk or the page cache; a reused, already-faulted buffer reads at memcpy speed.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
from dataclasses import dataclass

from warmstart.errors import StoreError

PAGE = mmap.PAGESIZE
HUGE_PAGE = 2 << 20
# Linux madvise advice values that Python's mmap module does not name on every version.
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", 14)
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _address(mm: mmap.mmap) -> int:
    holder = ctypes.c_char.from_buffer(mm)
    try:
        return ctypes.addressof(holder)
    finally:
        del holder


class Arena:
    """One page-aligned anonymous buffer of at least `size` bytes, 2 MiB-aligned for huge pages.

    `view` is a writable memoryview of exactly `capacity` bytes. Not thread-safe to resize; reads
    into disjoint slices from many threads are fine.
    """

    def __init__(self, size: int, *, huge_pages: bool = True) -> None:
        if size <= 0:
            raise ValueError("an arena needs a positive size")
        self.capacity = round_up(size, HUGE_PAGE)
        try:
            self._map = mmap.mmap(-1, self.capacity + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise StoreError(f"cannot reserve a {self.capacity >> 20} MiB load buffer: {exc.strerror or exc}") from exc
        self._skip = (-_address(self._map)) % HUGE_PAGE
        self.view = memoryview(self._map)[self._skip:self._skip + self.capacity]
        self.huge_pages = huge_pages and self._advise(_MADV_HUGEPAGE)
        self.faulted = False

    def _advise(self, advice: int) -> bool:
        try:
            self._map.madvise(advice, self._skip, self.capacity)
            return True
        except (OSError, ValueError):
            return False

    def prefault(self) -> None:
        """Fault every page in now (MADV_POPULATE_WRITE, else a write per page), so reads into it
        later run at copy speed instead of page-fault speed."""
        if self.faulted:
            return
        if not self._advise(_MADV_POPULATE_WRITE):
            step = HUGE_PAGE if self.huge_pages else PAGE
            for offset in range(0, self.capacity, step):
                self.view[offset] = 0
        self.faulted = True


@dataclass
class _Slot:
    arena: Arena
    busy: bool


class ArenaPool:
    """Arenas kept for reuse: `take(size)` returns an idle arena big enough (the smallest such), or a new one.

    `reserve(size)` creates and pre-faults an arena ahead of time, so that the first load does not pay
    for first touch; `limit_bytes` caps the idle arenas kept (the oldest are dropped beyond it).
    """

    def __init__(self, *, huge_pages: bool = True, limit_bytes: int | None = None) -> None:
        self.huge_pages = huge_pages
        self.limit_bytes = limit_bytes
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()

    def reserve(self, size: int) -> Arena:
        arena = self.take(size)
        arena.prefault()
        self.give_back(arena)
        return arena

    def take(self, size: int) -> Arena:
        with self._lock:
            idle = [s for s in self._slots if not s.busy and s.arena.capacity >= size]
            if idle:
                slot = min(idle, key=lambda s: s.arena.capacity)
                slot.busy = True
                return slot.arena
        arena = Arena(size, huge_pages=self.huge_pages)
        with self._lock:
            self._slots.append(_Slot(arena, busy=True))
        return arena

    def give_back(self, arena: Arena) -> None:
        with self._lock:
            for slot in self._slots:
                if slot.arena is arena:
                    slot.busy = False
            if self.limit_bytes is not None:
                idle = [s for s in self._slots if not s.busy]
                while idle and sum(s.arena.capacity for s in idle) > self.limit_bytes:
                    self._slots.remove(idle.pop(0))

    def clear(self) -> None:
        """Drop every idle arena (their memory goes back when no tensor views remain)."""
        with self._lock:
            self._slots = [s for s in self._slots if s.busy]

    @property
    def idle_bytes(self) -> int:
        with self._lock:
            return sum(s.arena.capacity for s in self._slots if not s.busy)
