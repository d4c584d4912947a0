"""Which libraries a wheel is stripped of debug information: only ELF files that carry it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from warmstart.image.wheels import has_debug_info


def test_llama_cpp_carries_debug_information_and_numpy_does_not() -> None:
    xllamacpp = Path(importlib.util.find_spec("xllamacpp").origin).parent  # type: ignore[union-attr, arg-type]
    assert has_debug_info(next(xllamacpp.glob("*.so")).read_bytes())
    numpy_libs = Path(importlib.util.find_spec("numpy").origin).parent.parent / "numpy.libs"  # type: ignore[union-attr, arg-type]
    assert not any(has_debug_info(f.read_bytes()) for f in numpy_libs.glob("*.so*"))  # patchelf'd: left alone


def test_what_is_not_an_elf_is_not_stripped() -> None:
    assert not has_debug_info(b"")
    assert not has_debug_info(b"\x7fELF" + b"\0" * 100)
    assert not has_debug_info(b"#!/bin/sh\n" * 20)
