"""The default base: Debian's python3 and the C/C++ runtime the engine needs, made by mmdebstrap from
Debian packages (no registry), without docs, man pages, locales, apt or its state.

The tarball is cached by its recipe, so the second build of any image skips the minute it takes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from warmstart.image import tools

SUITE = "bookworm"
# python3: the server; libgomp1 and libstdc++6: llama.cpp (xllamacpp's library links them);
# usr-is-merged: what init-system-helpers needs instead of usrmerge and the perl it runs
PACKAGES = ("python3", "libgomp1", "libstdc++6", "usr-is-merged")
_EXCLUDE = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
            "/usr/share/lintian/*", "/usr/share/common-licenses/*")
_KEEP = ("/usr/share/doc/*/copyright",)  # licences stay with the binaries they cover
# what only the bootstrap needed: apt and its TLS stack; usrmerge and the perl it runs (47 MB), where the
# bootstrap installed them; perl-base, which dpkg's scripts use, stays
_APT = ("apt", "libapt-pkg6.0", "libgnutls30", "libp11-kit0", "libtasn1-6", "libhogweed6", "libnettle8")
_USRMERGE = ("usrmerge", "libfile-find-rule-perl", "libnumber-compare-perl", "libtext-glob-perl", "perl",
             "libperl5.36", "perl-modules-5.36", "libgdbm-compat4")
_HOOKS = (
    'chroot "$1" dpkg --purge ' + " ".join(_APT),
    'if chroot "$1" dpkg -s usrmerge >/dev/null 2>&1; then chroot "$1" dpkg --purge ' + " ".join(_USRMERGE) + "; fi",
    'rm -rf "$1"/var/lib/apt "$1"/var/cache/* "$1"/var/log/* "$1"/tmp/*',
)


@dataclass(frozen=True)
class BaseRecipe:
    suite: str = SUITE
    packages: tuple[str, ...] = PACKAGES
    naive: bool = False  # the benchmark's baseline: a full base with pip and build tools, nothing removed

    @property
    def ref(self) -> str:
        return f"localhost/warmstart-base:{self.suite}-{self.key[:12]}"

    @property
    def key(self) -> str:
        recipe = (self.suite, self.packages, self.naive, _EXCLUDE, _KEEP, _HOOKS)
        return hashlib.sha256(repr(recipe).encode()).hexdigest()

    def argv(self, tarball: Path) -> list[str]:
        args = ["--quiet", "--variant=apt" if self.naive else "--variant=minbase",
                "--include=" + ",".join(self.packages)]
        if not self.naive:
            args += [f"--dpkgopt=path-exclude={p}" for p in _EXCLUDE]
            args += [f"--dpkgopt=path-include={p}" for p in _KEEP]
            args += [f"--customize-hook={h}" for h in _HOOKS]
        return [*args, self.suite, str(tarball)]


NAIVE = BaseRecipe(packages=("python3", "python3-pip", "python3-venv", "python3-dev", "build-essential",
                             "curl", "ca-certificates", "git"), naive=True)


def ensure_base(recipe: BaseRecipe, cache_dir: Path) -> str:
    """The base image's reference in podman's storage: imported from the cached tarball, made first
    when there is none (mmdebstrap, about a minute)."""
    if tools.image_exists(recipe.ref):
        return recipe.ref
    tarball = cache_dir / f"base-{recipe.suite}-{recipe.key[:12]}.tar"
    if not tarball.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        part = tarball.with_suffix(".part.tar")
        part.unlink(missing_ok=True)
        tools.run("mmdebstrap", recipe.argv(part), timeout=1200)
        os.replace(part, tarball)
    tools.import_tarball(tarball, recipe.ref)
    return recipe.ref
