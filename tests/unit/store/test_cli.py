"""`warmstart models ...`: one line per answer, one line per error, the right exit status."""

from __future__ import annotations

import json

from warmstart.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_verify_rm(tmp_path, capsys):
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + b"\1" * 1000)
    data = ["--data-dir", str(tmp_path / "data")]

    code, out, _ = run(capsys, "models", "list", *data)
    assert code == 0 and "no models in the store" in out
    code, out, _ = run(capsys, "models", "add", str(model), "--name", "tiny", *data)
    assert code == 0 and out.startswith("added tiny: gguf, 1 file(s)") and 'path = "store:tiny"' in out
    code, out, _ = run(capsys, "models", "list", *data)
    assert code == 0 and out.splitlines()[1].split()[:4] == ["tiny", "llamacpp", "gguf", "1004"]
    code, out, _ = run(capsys, "models", "list", "--json", *data)
    assert json.loads(out)[0]["files"][0]["size"] == 1004
    code, out, _ = run(capsys, "models", "verify", *data)
    assert code == 0 and out.startswith("tiny: ok")

    model.write_bytes(b"GGUF" + b"\2" * 1000)
    code, out, err = run(capsys, "models", "verify", "tiny", *data)
    assert code == 1 and "tiny.gguf: sha256" in out
    assert err.count("\n") == 1 and "do not match their manifests" in err

    code, out, _ = run(capsys, "models", "rm", "tiny", *data)
    assert code == 0 and "files were left on disk" in out and model.exists()


def test_bad_input_is_one_line(tmp_path, capsys):
    data = ["--data-dir", str(tmp_path / "data")]
    for argv, expected, status in (
        (("models", "add", str(tmp_path / "missing.gguf")), "no such file or folder", 1),
        (("models", "rm", "ghost"), "no model named 'ghost'", 1),
        (("models", "verify", "ghost"), "no model named 'ghost'", 1),
        (("models",), "say what to do", 2),
        (("models", "add", str(tmp_path), "--name", "../x"), "is not valid", 1),
    ):
        code, _, err = run(capsys, *argv, *(data if len(argv) > 1 else []))
        assert code == status, argv
        assert err.startswith("warmstart: error: ") and expected in err and err.count("\n") == 1, err


def test_adding_a_folder_of_several_gguf_models_is_refused_naming_them(tmp_path, capsys):
    """It could not be served (which one?): refused when added, not at its first request."""
    quants = tmp_path / "quants"
    quants.mkdir()
    for name in ("m.Q4_K_M.gguf", "m.Q8_0.gguf"):
        (quants / name).write_bytes(b"GGUF" + b"\1" * 100)
    data = ["--data-dir", str(tmp_path / "data")]
    code, _, err = run(capsys, "models", "add", str(quants), *data)
    assert code == 1 and err.count("\n") == 1
    assert "holds 2 GGUF models (m.Q4_K_M.gguf, m.Q8_0.gguf): name the one to serve" in err
    code, out, _ = run(capsys, "models", "add", str(quants / "m.Q8_0.gguf"), *data)
    assert code == 0 and out.startswith("added m.Q8_0: gguf")


def test_bench_names_what_exists(capsys):
    code, _, err = run(capsys, "bench", "nope")
    assert code == 2 and "no benchmark named 'nope'" in err and "load" in err and err.count("\n") == 1
