"""Who may use the page: requests addressed to a name the server binds, from the page itself.

Two checks, on every HTTP request and every WebSocket handshake, before any route runs:

* **Host**: the ``Host`` header must name 127.0.0.1, localhost, [::1] or the ``--host`` the
  server binds (any port). A web page whose domain an attacker re-points at 127.0.0.1 (DNS
  rebinding) sends its own name there and is refused with 421. When the server binds every
  address (``0.0.0.0`` or ``::``), any IP address is accepted as well, never another name.
* **Origin**: a request that carries an ``Origin`` (browsers send one with every POST, every
  cross-origin fetch and every WebSocket) must come from the page's own origin,
  ``http://<Host>``; any other, ``null`` included, is refused with 403, so no other web page
  the user visits can drive the server or open its live stream. Requests without an Origin
  (curl, scripts, the page's own GETs) are allowed.

A refused request answers ``{"error": "<one sentence>"}``; a refused WebSocket handshake
answers the same HTTP error where the server supports denial responses (uvicorn does),
otherwise a close before accept (uvicorn then answers 403).
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.websockets import WebSocketClose

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::")


def split_host(value: str) -> tuple[str, int | None] | None:
    """A ``Host`` value, ``name[:port]`` or ``[v6][:port]``, as (lower-case name without
    brackets, port or None); None when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        name, colon, port_text = value.rpartition(":") if ":" in value else (value, "", None)
        if colon and ":" in name:  # an unbracketed IPv6 address is not a Host
            return None
    if not name:
        return None
    if port_text is None:
        return name, None
    return (name, int(port_text)) if port_text.isdigit() and len(port_text) <= 5 else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """ASGI middleware: the Host and Origin checks of the module docstring."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        self.app = app
        self.bound = host.strip("[]").lower()
        self.names = tuple(dict.fromkeys((*LOOPBACK_NAMES, self.bound)))
        self.any_ip = self.bound in WILDCARD_HOSTS

    def allows(self, name: str) -> bool:
        """Whether a Host name (no port, no brackets) is one this server answers to."""
        return name in self.names or (self.any_ip and _is_ip(name))

    def answers_to(self) -> str:
        return ", ".join(self.names) + (" and any IP address" if self.any_ip else "")

    def address(self, scope: Any) -> str:
        """The page's address on the bound host, for a refusal's advice."""
        shown = "127.0.0.1" if self.any_ip else self.bound
        port = (scope.get("server") or ("", 80))[1]
        return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            refusal = self.refusal(Headers(scope=scope), scope)
            if refusal is not None:
                await _refuse(scope, receive, send, *refusal)
                return
        await self.app(scope, receive, send)

    def refusal(self, headers: Headers, scope: Any) -> tuple[int, str] | None:
        """(status, sentence) when the request must be refused, else None."""
        host = headers.get("host")
        parsed = split_host(host) if host else None
        if parsed is None or not self.allows(parsed[0]):
            named = f"the host {host!r}" if host else "a request without a Host header"
            return 421, (f"This server does not answer to {named}: open "
                         f"{self.address(scope)} (it answers to {self.answers_to()}).")
        origin = headers.get("origin")
        if origin is not None and not same_origin(origin, parsed, scope):
            return 403, (f"Requests from the origin {origin!r} are refused: only the page "
                         f"itself (http://{host}) may use this server.")
        return None


def same_origin(origin: str, host: tuple[str, int | None], scope: Any) -> bool:
    """Whether an ``Origin`` header is ``http://<Host>`` (https when served over TLS)."""
    secure = scope.get("scheme") in ("https", "wss")
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != ("https" if secure else "http") or parts.path or not parts.hostname:
        return False
    default = 443 if secure else 80
    return (parts.hostname, port or default) == (host[0], host[1] or default)


async def _refuse(scope: Any, receive: Any, send: Any, status: int, message: str) -> None:
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get(
            "extensions", {}):
        await WebSocketClose(code=1008)(scope, receive, send)
        return
    await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
