"""Wheels made smaller for an image: the debug information of their shared libraries stripped on the host
(`strip --strip-debug`, symbols kept, so a backtrace still names functions), the wheel's RECORD updated.

xllamacpp ships llama.cpp built with debug information: 102 MB installed, 30 MB without it. The image
has no binutils, so this happens on the host, where the wheels are gathered; without `strip` there
the wheels go in as they are. A stripped wheel is cached by the digest of the original and written
reproducibly (sorted entries, fixed times), so the image's install layer stays cached.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

_EPOCH = (1980, 1, 1, 0, 0, 0)


def _is_library(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.endswith(".so") or ".so." in base


def has_debug_info(elf: bytes) -> bool:
    """A 64-bit little-endian ELF with a .debug_info section. Only those are stripped: libraries vendored
    by auditwheel (`*.libs/`) were rewritten by patchelf, and strip breaks their layout."""
    if len(elf) < 64 or elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    shoff = int.from_bytes(elf[0x28:0x30], "little")
    shentsize, shnum, shstrndx = (int.from_bytes(elf[o:o + 2], "little") for o in (0x3A, 0x3C, 0x3E))
    if not shoff or shstrndx >= shnum or shoff + shnum * shentsize > len(elf):
        return False
    names_header = shoff + shstrndx * shentsize
    names_at = int.from_bytes(elf[names_header + 0x18:names_header + 0x20], "little")
    for i in range(shnum):
        header = shoff + i * shentsize
        name = int.from_bytes(elf[header:header + 4], "little")
        if elf[names_at + name:names_at + name + 12] == b".debug_info\0":
            return True
    return False


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def stripped(wheel: Path, cache: Path) -> Path:
    """The wheel with its libraries' debug information removed, or the wheel itself when there is nothing
    to strip (or no `strip`)."""
    tool = shutil.which("strip")
    if tool is None:
        return wheel
    with zipfile.ZipFile(wheel) as zf:
        libraries = [i for i in zf.infolist() if _is_library(i.filename) and ".libs/" not in i.filename]
        if not libraries:
            return wheel
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:24]
        target = cache / digest / wheel.name
        if target.is_file():
            return target
        contents = {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
        modes = {i.filename: i.external_attr for i in zf.infolist()}
    changed = False
    with tempfile.TemporaryDirectory() as tmp:
        for info in libraries:
            if not has_debug_info(contents[info.filename]):
                continue
            path = Path(tmp) / "lib"
            path.write_bytes(contents[info.filename])
            if subprocess.run([tool, "--strip-debug", str(path)], capture_output=True).returncode != 0:
                continue  # not an ELF strip understands: keep it as it is
            smaller = path.read_bytes()
            if len(smaller) < len(contents[info.filename]):
                contents[info.filename], changed = smaller, True
    if not changed:
        return wheel
    record = next(name for name in contents if name.endswith(".dist-info/RECORD"))
    lines = []
    for line in contents[record].decode().splitlines():
        name = line.rsplit(",", 2)[0]
        if name in contents and name != record:
            lines.append(f"{name},{_record_hash(contents[name])},{len(contents[name])}")
        else:
            lines.append(line)
    contents[record] = ("\n".join(lines) + "\n").encode()
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(".part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as out:
        for name in sorted(contents, key=lambda n: (n == record, n)):  # RECORD last, as wheels have it
            info = zipfile.ZipInfo(name, _EPOCH)
            info.external_attr = modes.get(name, 0o644 << 16)
            info.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(info, contents[name])
    part.replace(target)
    return target
