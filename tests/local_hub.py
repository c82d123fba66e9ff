"""A Hugging Face Hub on 127.0.0.1 serving local folders as repositories, for tests of the
real `huggingface_hub` client (`snapshot_download`) without the network.

It answers the requests `model_info` and `snapshot_download` make: the repository info
(`/api/models/<repo>[/revision/<rev>]`), the recursive tree listing
(`/api/models/<repo>/tree/<rev>`) and file downloads (`HEAD`/`GET /<repo>/resolve/<rev>/<path>`),
with the headers the client reads (X-Repo-Commit, ETag, Content-Length), and a 404 with
X-Error-Code RepoNotFound for unknown repositories. It records every file it sends.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class LocalHub:
    def __init__(self, repos: dict[str, Path]):
        self.repos = {repo: Path(folder) for repo, folder in repos.items()}
        self.downloaded: list[tuple[str, str]] = []  # (repo, path) of every GET of a file
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo: str) -> list[str]:
        root = self.repos[repo]
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def commit(self, repo: str) -> str:
        digest = hashlib.sha1(repo.encode())
        for name in self.files(repo):
            digest.update(name.encode())
            digest.update((self.repos[repo] / name).read_bytes())
        return digest.hexdigest()

    def _split(self, path: str) -> tuple[str | None, list[str]]:
        """(repo, the rest of the path) for /api/models/<org>/<name>/... or /<org>/<name>/..."""
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "models"]:
            parts = parts[2:]
        repo = "/".join(parts[:2])
        return (repo if repo in self.repos else None), parts[2:]

    def _serve(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        url = urlsplit(request.path)
        repo, rest = self._split(url.path)
        if repo is None:
            return self._send(request, 404, b'{"error": "Repository not found"}', body,
                              {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"})
        commit = self.commit(repo)
        if url.path.startswith("/api/") and (rest == [] or rest[0] == "revision"):
            info = {"id": repo, "sha": commit, "siblings": [{"rfilename": f} for f in self.files(repo)]}
            return self._json(request, info, body)
        if url.path.startswith("/api/") and rest[:1] == ["tree"]:
            entries = []
            for name in self.files(repo):
                data = (self.repos[repo] / name).read_bytes()
                entries.append({"type": "file", "path": name, "size": len(data),
                                "oid": hashlib.sha1(data).hexdigest()})
            return self._json(request, entries, body)
        if rest[:1] == ["resolve"] and len(rest) >= 3:
            name = "/".join(rest[2:])
            path = self.repos[repo] / name
            if name not in self.files(repo):
                return self._send(request, 404, b"Entry not found", body, {"X-Error-Code": "EntryNotFound"})
            data = path.read_bytes()
            if body:
                self.downloaded.append((repo, name))
            return self._send(request, 200, data, body, {
                "X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                "Content-Type": "application/octet-stream"})
        return self._send(request, 404, b"not found", body, {})

    def _json(self, request: BaseHTTPRequestHandler, value, body: bool) -> None:
        self._send(request, 200, json.dumps(value).encode(), body, {"Content-Type": "application/json"})

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, data: bytes, body: bool, headers: dict[str, str]) -> None:
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if body:
            request.wfile.write(data)
