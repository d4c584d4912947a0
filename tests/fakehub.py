"""A loopback server that answers like the Hugging Face Hub, for the few calls `huggingface_hub` makes to
download one file: model info (with its files), HEAD and GET of /ORG/REPO/resolve/REV/FILE (with the
headers the client reads: X-Repo-Commit, X-Linked-Etag, X-Linked-Size), byte ranges for resumed
downloads, and an optional token. Repositories and files are what the test gives it; nothing is fetched."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, Path]], token: str | None = None,
                 cut_after: int | None = None) -> None:
        self.repos, self.token, self.cut_after = repos, token, cut_after
        self.commit = hashlib.sha1(b"warmstart-fake-hub").hexdigest()
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((h.command, h.path, h.headers.get("Range")))
        if self.token is not None and h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._json(h, 401, {"error": "Invalid credentials"}, {"X-Error-Code": "GatedRepo"} if
                              h.path.split("?")[0].count("/") > 2 else {})
        path = h.path.split("?")[0]
        info = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$", path)
        if info:
            files = self.repos.get(info.group(1))
            if files is None:
                return self._json(h, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return self._json(h, 200, {"id": info.group(1), "modelId": info.group(1), "sha": self.commit,
                                       "siblings": [{"rfilename": name} for name in files]})
        resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        files = self.repos.get(resolve.group(1), {}) if resolve else {}
        file = files.get(resolve.group(3)) if resolve else None
        if file is None:
            return self._json(h, 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        data = file.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        start = 0
        ranged = re.match(r"bytes=(\d+)-$", h.headers.get("Range") or "")
        if ranged:
            start = int(ranged.group(1))
        h.send_response(206 if ranged else 200)
        h.send_header("X-Repo-Commit", self.commit)
        h.send_header("X-Linked-Etag", f'"{sha}"')
        h.send_header("ETag", f'"{sha}"')
        h.send_header("X-Linked-Size", str(len(data)))
        h.send_header("Content-Length", str(len(data) - start))
        if ranged:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if body:
            chunk = data[start:]
            if self.cut_after is not None:  # the connection drops part-way, once
                chunk, self.cut_after = chunk[:self.cut_after], None
                h.wfile.write(chunk)
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(2)
                return
            h.wfile.write(chunk)

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
