"""A static file server for `site/` that gets the details browsers care about right.

- MIME types for `.wasm` (needed for streaming compilation), `.json`, `.bin`, JS.
- HTTP Range (resumable and partial shard downloads), ETag / 304.
- Cache headers: content-addressed files (named by their SHA-256) are immutable;
  everything else is revalidated on each use.
- Optional cross-origin isolation (COOP/COEP), which WebAssembly threads need.
- Optional CORS for a list of origins (`cors.py`), for the widget on other sites.
- Never serves anything outside its root: dot-dot segments in any encoding,
  backslashes, NUL bytes, dotfiles and symlinks that leave the root are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from .cors import CorsPolicy

MIME_TYPES = {
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".bin": "application/octet-stream",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".map": "application/json",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".gguf": "application/octet-stream",
}
# A file whose name starts with a SHA-256 digest never changes under that name.
_CONTENT_ADDRESSED = re.compile(r"^[0-9a-f]{64}(\.[A-Za-z0-9]+)?$")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


def resolve_safe(root: Path, url_path: str) -> Path | None:
    """Maps a (percent-decoded) URL path to a file under `root`, or None if it is not allowed.

    The path is decoded once more so that `%2e%2e` / `%2f` sent through a proxy
    that did not decode them are judged the same way.
    """
    decoded = unquote(url_path)
    if "\\" in decoded or "\0" in decoded:
        return None
    parts = [p for p in decoded.split("/") if p]
    if any(p in (".", "..") or p.startswith(".") for p in parts):
        return None
    candidate = root.joinpath(*parts)
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if resolved != root and root not in resolved.parents:  # e.g. a symlink out of the root
        return None
    return resolved


def cache_control(path: Path) -> str:
    return IMMUTABLE if _CONTENT_ADDRESSED.match(path.name) else REVALIDATE


def create_app(root: str | Path, cross_origin_isolated: bool = False, cors_origins: Iterable[str] = ()) -> FastAPI:
    """The app serving `root`. `cors_origins`: origins (or `*`) whose pages may read every
    file cross-origin; a bad value raises `CorsOriginError` before anything is served."""
    root = Path(root).resolve(strict=True)
    cors = CorsPolicy.of(cors_origins)
    app = FastAPI(title="webkiln dev server", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        if cors.enabled and request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            status, headers = cors.preflight(request.headers)
            response: Response = Response(status_code=status, headers=headers)
        else:
            response = await call_next(request)
            response.headers.update(cors.response_headers(request.headers.get("origin")))
            if cors.varies_by_origin:
                vary = [v.strip() for v in response.headers.get("vary", "").split(",") if v.strip()]
                response.headers["Vary"] = ", ".join([*vary, "Origin"])
        response.headers["X-Content-Type-Options"] = "nosniff"
        if cross_origin_isolated:
            response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
            response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
            # Files shared with other origins must stay loadable by their isolated pages.
            if not cors.enabled:
                response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        return response

    @app.api_route("/{url_path:path}", methods=["GET", "HEAD"])
    async def serve(url_path: str, request: Request) -> Response:
        # Judge the path as the client sent it, before any router normalisation.
        raw = request.scope.get("raw_path", b"").split(b"?", 1)[0].decode("latin-1")
        target = resolve_safe(root, raw or url_path)
        if target is None:
            return PlainTextResponse("Not Found", status_code=404)
        if target.is_dir():
            if not raw.endswith("/"):
                return RedirectResponse(url=raw + "/", status_code=307)
            target = target / "index.html"
            if not target.is_file():
                return PlainTextResponse("Not Found", status_code=404)
        response = FileResponse(
            target,
            media_type=MIME_TYPES.get(target.suffix.lower(), "application/octet-stream"),
            headers={"Cache-Control": cache_control(target)},
            stat_result=target.stat(),  # sets ETag / Last-Modified now, for the 304 check below
        )
        etag = response.headers.get("etag")
        if etag and etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache_control(target)})
        return response

    return app
