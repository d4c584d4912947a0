"""`warmstart quantize` and `warmstart eval` on bad input: one line saying what is wrong, never a traceback."""

import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "warmstart", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv,needle", [
    (["quantize", "{tmp}/missing.gguf", "--type", "q8_0"], "no model '{tmp}/missing.gguf': not a file"),
    (["quantize", "{tmp}/junk.gguf", "--type", "q8_0"], "is not a readable GGUF file"),
    (["quantize", "{tmp}/junk.gguf", "--type", "q3"], "argument --type: invalid choice: 'q3'"),
    (["quantize", "{tmp}/hf", "--type", "q8_0"], "needs llama.cpp's convert_hf_to_gguf.py"),
    (["eval", "{tmp}/junk.gguf", "--against", "{tmp}/junk.gguf"], "llama.cpp could not load"),
    (["eval", "{tmp}/junk.gguf", "--against", "{tmp}/junk.gguf", "--prompts", "{tmp}/none"], "prompt file not found"),
    (["eval", "{tmp}/junk.gguf", "--against", "{tmp}/junk.gguf", "--min-top1", "2"], "--min-top1 2.0: must be a share"),
])
def test_bad_input_is_one_line(tmp_path, argv, needle):
    (tmp_path / "junk.gguf").write_text("not a model")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"")
    out = run(*[a.format(tmp=tmp_path) for a in argv], "--data-dir", str(tmp_path / "data"))
    assert out.returncode in (1, 2)
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("warmstart: error: ") and needle.format(tmp=tmp_path) in line
