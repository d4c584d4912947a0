"""Running an image with its network off: a podman network with no route out (`--internal`), the server's
port relayed onto 127.0.0.1 of the host.

netavark (podman's network stack on Debian 12) does not publish ports of an internal network, so the
relay does what podman's own rootless port forwarder does: it accepts on loopback and copies bytes to
the container's address on the host-only bridge. Used by the image tests and `warmstart bench image`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from warmstart.errors import ImageError
from warmstart.image import tools

NETWORK = "warmstart-offline"


def ensure_offline_network(name: str = NETWORK) -> str:
    argv = [tools.require("podman"), "network", "exists", name]
    if subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True).returncode != 0:
        subprocess.run([tools.require("podman"), "network", "create", "--internal", name],
                       stdin=subprocess.DEVNULL, capture_output=True)  # a racing create is fine
        if subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True).returncode != 0:
            raise ImageError(f"could not create the podman network {name}")
    return name


def gateway_of(network: str) -> str:
    """The host's address on the network (its bridge): where a container reaches the host."""
    data = json.loads(tools.run("podman", ["network", "inspect", network]))
    return str(data[0]["subnets"][0]["gateway"])


class LoopbackRelay:
    """Accepts on 127.0.0.1:PORT and relays each connection to (host, port); threads, one pair per connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            ends = [2]  # directions still open: the last one to finish closes both sockets
            lock = threading.Lock()
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, ends, lock), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, ends: list[int], lock: threading.Lock) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with lock:
                ends[0] -= 1
                last = ends[0] == 0
            if last:
                src.close()
                dst.close()

    def close(self) -> None:
        self.server.close()


@dataclass
class Running:
    name: str
    address: str  # on the offline network
    url: str  # http://127.0.0.1:PORT, relayed
    started: float  # time.monotonic() just before `podman run`

    def exec(self, argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tools.require("podman"), "exec", self.name, *argv], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def cpu_seconds(self) -> float | None:
        """CPU time every process of the container has used so far (its cgroup's account; cgroup v1 or v2),
        or None where the host does not show it. On a shared machine this, unlike wall time, does not grow
        with the other jobs' load."""
        path = tools.run("podman", ["inspect", "--format", "{{.State.CgroupPath}}", self.name]).strip()
        if not path:
            return None
        with contextlib.suppress(OSError, ValueError):
            return int(Path(f"/sys/fs/cgroup/cpuacct{path}/cpuacct.usage").read_text()) / 1e9
        with contextlib.suppress(OSError, ValueError, StopIteration):
            stat = Path(f"/sys/fs/cgroup{path}/cpu.stat").read_text().split()
            return int(stat[stat.index("usage_usec") + 1]) / 1e6
        return None

    def logs(self) -> str:
        done = subprocess.run([tools.require("podman"), "logs", self.name], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        return (done.stdout + done.stderr)[-4000:]


@contextlib.contextmanager
def offline(image: str, name: str, *, env: dict[str, str] | None = None, port: int = 8000,
            args: Sequence[str] = (), flags: Sequence[str] = (), network: str = NETWORK) -> Iterator[Running]:
    """Runs `image` detached on the offline network (`flags`: more of `podman run`'s, `args`: the image's
    command); yields once its address is known (not when it is ready)."""
    ensure_offline_network(network)
    subprocess.run([tools.require("podman"), "rm", "--force", "--time", "0", name], capture_output=True,
                   stdin=subprocess.DEVNULL)
    argv = ["run", "--detach", "--name", name, "--network", network]
    for key, value in (env or {}).items():
        argv += ["--env", f"{key}={value}"]
    started = time.monotonic()
    tools.run("podman", [*argv, *flags, image, *args], timeout=120)
    relay = None
    try:
        address = tools.run("podman", ["inspect", "--format",
                                       "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name]).strip()
        if not address:
            logs = tools.run("podman", ["logs", name])[-800:]
            raise ImageError(f"container {name} has no address on {network}: {logs}")
        relay = LoopbackRelay((address, port))
        yield Running(name, address, f"http://127.0.0.1:{relay.port}", started)
    finally:
        if relay is not None:
            relay.close()
        subprocess.run([tools.require("podman"), "rm", "--force", "--time", "5", name], capture_output=True,
                       stdin=subprocess.DEVNULL)


def wait_ready(url: str, deadline_s: float, running: Running | None = None) -> float:
    """Polls URL/readyz until it answers 200; returns when (time.monotonic()). ImageError past the deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic()
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    logs = running.logs() if running is not None else ""
    raise ImageError(f"{url}/readyz did not answer within {deadline_s:.0f} s; the container's log ends:\n{logs}")
