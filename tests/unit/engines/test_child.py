"""An engine process leaves when the warmstart that started it is gone, and only then, also when that
warmstart is PID 1 of a container (where "re-parented to PID 1" cannot tell)."""

from __future__ import annotations

import os
import subprocess
import sys

from warmstart.engines.child import PARENT_PID, child_env

ASK = "from warmstart.engines.child import parent_gone; print(parent_gone())"


def ask(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", ASK], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_child_knows_its_parent_is_alive() -> None:
    assert ask(child_env(dict(os.environ))) == "False"


def test_a_child_of_another_parent_knows_it_was_re_parented() -> None:
    # what a child sees once its warmstart died: its parent is no longer the one named
    assert ask({**os.environ, PARENT_PID: str(os.getpid() + 10_000_000)}) == "True"


def test_a_parent_that_is_pid_1_is_not_mistaken_for_init() -> None:
    # a child of PID 1 that was started by PID 1 (warmstart as a container's entrypoint) stays
    env = {**os.environ, PARENT_PID: "1"}
    out = subprocess.run([sys.executable, "-c", "import os; from warmstart.engines.child import parent_gone; "
                          "os.getppid = lambda: 1; print(parent_gone())"], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
