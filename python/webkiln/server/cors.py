"""Cross-origin access for a configured list of origins (`webkiln serve --cors-origin`).

Why: the embeddable widget runs in a host page on another origin, and that page fetches
`widget.js`, the engine Worker, the `.wasm` modules and the model shards from this server.
Module scripts, Workers bootstrapped by import, `fetch()` and `WebAssembly.instantiateStreaming`
are all CORS requests, so every response must name the host page's origin (or `*`) in
`Access-Control-Allow-Origin`, and the response headers the storage layer reads on a
cross-origin response (length, range, ETag) must be exposed explicitly: only the safelisted
ones are visible otherwise. A ranged request is answered to a preflight, so OPTIONS is too.

A host page that is cross-origin isolated (COEP `require-corp`) also refuses any cross-origin
resource that does not opt in with `Cross-Origin-Resource-Policy: cross-origin`; a server that
shares its files with other origins says so on every response.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import WebkilnError

ANY_ORIGIN = "*"
# Read by web/src/storage on cross-origin responses: sizes, resumed ranges, revalidation.
EXPOSED_HEADERS = "Content-Length, Content-Range, ETag, Accept-Ranges"
ALLOWED_METHODS = "GET, HEAD, OPTIONS"
# Request headers a cross-origin page may send beyond the safelisted ones: Range for partial
# shard downloads, the conditional headers a revalidating fetch adds.
ALLOWED_REQUEST_HEADERS = ("range", "if-none-match", "if-modified-since", "if-range")
PREFLIGHT_MAX_AGE = "86400"


class CorsOriginError(WebkilnError, ValueError):
    """A `--cors-origin` value that is not `*` or an origin (`scheme://host[:port]`)."""


def parse_origin(value: str) -> str:
    """`*`, or the origin as browsers send it in the `Origin` header (lower-case scheme and
    host, no path, default port kept only if written); a trailing slash is forgiven."""
    text = value.strip()
    if text == ANY_ORIGIN:
        return text
    if text.endswith("/"):
        text = text[:-1]
    parts = urlsplit(text)
    hint = "an origin is scheme://host[:port], e.g. https://blog.example or http://localhost:8001, or *"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CorsOriginError(f"--cors-origin {value!r} is not an origin: {hint}")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise CorsOriginError(f"--cors-origin {value!r} has more than an origin (a path, query or user): {hint}")
    try:
        port = parts.port
    except ValueError as err:
        raise CorsOriginError(f"--cors-origin {value!r} has a bad port: {hint}") from err
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


@dataclass(frozen=True)
class CorsPolicy:
    """Which origins may read this server's responses; empty means same-origin only."""

    origins: frozenset[str]

    @classmethod
    def of(cls, origins: Iterable[str]) -> CorsPolicy:
        return cls(frozenset(parse_origin(o) for o in origins))

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    def allowed_origin(self, origin: str | None) -> str | None:
        """The `Access-Control-Allow-Origin` value for a request from `origin`, or None."""
        if ANY_ORIGIN in self.origins:
            return ANY_ORIGIN
        if origin is not None and origin in self.origins:
            return origin
        return None

    @property
    def varies_by_origin(self) -> bool:
        """Whether responses differ by the request's Origin (a list, not `*`): then every
        response says `Vary: Origin`, so a cache between here and the browser does not hand
        one origin's response (or a same-origin one, without the header) to another."""
        return self.enabled and ANY_ORIGIN not in self.origins

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """Headers a (non-preflight) response gets; `Vary` is merged by the caller."""
        if not self.enabled:
            return {}
        headers = {"Cross-Origin-Resource-Policy": "cross-origin"}
        allowed = self.allowed_origin(origin)
        if allowed is not None:
            headers["Access-Control-Allow-Origin"] = allowed
            headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return headers

    def preflight(self, request_headers: Mapping[str, str]) -> tuple[int, dict[str, str]]:
        """The status and headers answering an OPTIONS preflight (headers keyed lower-case).

        A refused preflight is a 403 without `Access-Control-Allow-Origin`: the browser then
        blocks the request, and the status tells a person reading the network log why.
        """
        allowed = self.allowed_origin(request_headers.get("origin"))
        method = request_headers.get("access-control-request-method", "").upper()
        asked = [h.strip().lower() for h in request_headers.get("access-control-request-headers", "").split(",")]
        asked = [h for h in asked if h]
        headers = {"Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}
        if allowed is None or method not in ("GET", "HEAD") or any(h not in ALLOWED_REQUEST_HEADERS for h in asked):
            return 403, headers
        headers.update({
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ", ".join(ALLOWED_REQUEST_HEADERS),
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        })
        return 204, headers
