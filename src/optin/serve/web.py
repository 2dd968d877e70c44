"""``optin serve``: the local web page over a run, a thin Starlette layer over the Python API.

Routes (every asset is served from this package; the page fetches nothing from elsewhere, and
its Content-Security-Policy forbids it):

* ``GET /``: the page; ``GET /static/...``: its script and style.
* ``GET /api/run``: the experiment, its systems, attacked attributes and test utterances.
* ``POST /api/analyse``: the request body is an audio file (at most ``max_bytes``, at most
  ``max_seconds`` long, decoded to prove it is audio); ``POST /api/analyse/utterance/{id}``:
  one of the run's test utterances. Both answer the analysis (:mod:`optin.serve.analysis`)
  with an ``id`` under which its audio and pictures stay available:
* ``GET /api/results/{id}/audio/{system}.wav`` and ``.../spectrogram/{system}.png``.
* ``GET /run/report.md`` and ``GET /run/figures/{name}.png``: the run's report and figures.
* ``WS /api/live``: float32 samples in, protected samples out (:mod:`optin.serve.live`).

Only requests addressed to a name the server binds, from the page's own origin, reach these
routes (:mod:`optin.serve.guard`); the report and figures are served only when their real
path lies inside the run folder (a link out of it is refused). Uploads are decoded one at a
time (the models' lock), each capped (:mod:`optin.serve.uploads`).

Errors answer ``{"error": "<one sentence>"}``; an unexpected one is logged on the server with
its traceback and the page gets one sentence; a client that hangs up mid-upload is one log line.
"""

from __future__ import annotations

import errno
import io
import ipaddress
import logging
import os
import secrets
import socket
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from optin.errors import OptinError
from optin.serve.analysis import (
    ORIGINAL,
    Analysis,
    UtteranceError,
    analyse_utterance,
    analyse_wave,
)
from optin.serve.guard import Guard
from optin.serve.live import LiveSession
from optin.serve.run_folder import ServedRun, load_run
from optin.serve.spectrogram_png import spectrogram_png
from optin.serve.uploads import (
    UploadError,
    UploadLimits,
    UploadTooLargeError,
    decode_upload,
    receive_upload,
)

logger = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
KEPT_ANALYSES = 16
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
       "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
INTERNAL = "The server could not do this (an internal error; its log says more)."


class ServeError(OptinError, RuntimeError):
    """The page cannot be served (its address cannot be bound); the message says why."""


@dataclass
class ServeState:
    """What the app holds: the run, recent analyses (newest last) and a lock that lets one
    analysis use the models at a time."""

    run: ServedRun
    limits: UploadLimits
    analyses: OrderedDict[str, Analysis]
    lock: threading.Lock

    def keep(self, analysis: Analysis) -> str:
        key = secrets.token_hex(8)
        self.analyses[key] = analysis
        while len(self.analyses) > KEPT_ANALYSES:
            self.analyses.popitem(last=False)
        return key

    def locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self.lock:
            return fn(*args)


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


def _state(request: Request | WebSocket) -> ServeState:
    return request.app.state.serve


def _run_info(run: ServedRun, limits: UploadLimits) -> dict[str, Any]:
    exp = run.experiment
    live = next((s for s in run.systems.values() if s.obfuscator is not None), None)
    return {
        "folder": str(run.folder), "experiment": exp["name"], "title": exp.get("title"),
        "experiments": run.experiments, "seed": run.seed, "permitted": run.permitted,
        "attacked": run.attacked,
        "systems": [{"key": s.key, "label": s.label, "makes_audio": s.makes_audio}
                    for s in run.systems.values()],
        "verification": run.extractor is not None,
        "utterances": [{"id": r["id"], **{c: r.get(c, "") for c in (run.permitted,
                                                                     *run.attacked)}}
                       for r in run.test_rows()],
        "report": "run/report.md" if run.report() else None,
        "figures": [f"run/figures/{p.name}" for p in run.figures()],
        "live": {"system": live.key, "label": live.label} if live else None,
        "limits": {"max_bytes": limits.max_bytes, "max_seconds": limits.max_seconds},
    }


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def run_info(request: Request) -> Response:
    state = _state(request)
    return JSONResponse(_run_info(state.run, state.limits))


def _answer(state: ServeState, analysis: Analysis) -> JSONResponse:
    return JSONResponse({"id": state.keep(analysis), **analysis.to_dict()})


async def analyse_upload(request: Request) -> Response:
    state = _state(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > state.limits.max_bytes:
        return _error(f"The file is larger than the "
                      f"{state.limits.max_bytes // (1024 * 1024)} MB limit.", 413)
    try:
        path = await receive_upload(request.stream(), state.limits)
    except ClientDisconnect:
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        logger.warning("optin serve: %s hung up during its upload to %s; nothing was kept",
                       client, request.url.path)
        return Response(status_code=400)
    except UploadError as err:
        return _upload_error(err)
    cfg = state.run.features
    try:  # decoding under the models' lock: one decode's memory at a time, whatever comes in
        wave = await run_in_threadpool(state.locked, decode_upload, path, state.limits,
                                       cfg.sample_rate, cfg.volume, cfg.target_dbfs)
    except UploadError as err:
        return _upload_error(err)
    analysis = await run_in_threadpool(state.locked, analyse_wave, state.run, wave)
    return _answer(state, analysis)


def _upload_error(err: UploadError) -> JSONResponse:
    return _error(str(err), 413 if isinstance(err, UploadTooLargeError) else 400)


async def analyse_corpus(request: Request) -> Response:
    state = _state(request)
    analysis = await run_in_threadpool(state.locked, analyse_utterance, state.run,
                                       request.path_params["utterance"])
    return _answer(state, analysis)


def _stored(request: Request, suffix: str) -> tuple[Analysis, Any] | JSONResponse:
    state = _state(request)
    analysis = state.analyses.get(request.path_params["analysis"])
    if analysis is None:
        return _error("This result is no longer kept; analyse the audio again.", 404)
    name = request.path_params["name"]
    key = name.removesuffix(suffix)
    found = next((r for r in analysis.results if r.key == key), None)
    if not name.endswith(suffix) or found is None or found.audio is None:
        return _error(f"No audio for system '{key}' in this result.", 404)
    return analysis, found


async def result_audio(request: Request) -> Response:
    stored = _stored(request, ".wav")
    if isinstance(stored, JSONResponse):
        return stored
    _, result = stored
    rate = _state(request).run.features.sample_rate
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(result.audio, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return Response(buffer.getvalue(), media_type="audio/wav")


async def result_spectrogram(request: Request) -> Response:
    stored = _stored(request, ".png")
    if isinstance(stored, JSONResponse):
        return stored
    _, result = stored
    cfg = _state(request).run.features
    title = "original" if result.key == ORIGINAL else result.label
    png = await run_in_threadpool(spectrogram_png, result.features,
                                  cfg.hop_length / cfg.sample_rate, cfg.sample_rate / 2, title)
    return Response(png, media_type="image/png")


async def run_report(request: Request) -> Response:
    report = _state(request).run.report()  # its real path, inside the run folder
    if report is None:
        return _error("This run has no report.md.", 404)
    return FileResponse(report, media_type="text/plain; charset=utf-8")


async def run_figure(request: Request) -> Response:
    name = request.path_params["name"]
    run = _state(request).run
    figures = {p.name: p for p in run.figures()}  # only names listed there
    real = run.real_file(figures[name]) if name in figures else None
    if real is None:
        return _error(f"This run has no figure '{name}'.", 404)
    return FileResponse(real, media_type="image/png")


async def live(websocket: WebSocket) -> None:
    """Float32 sample messages in; for each, a JSON header and (when any) the protected
    samples out; the text message "stop" flushes and closes."""
    state = _state(websocket)
    system = next((s for s in state.run.systems.values() if s.obfuscator is not None), None)
    await websocket.accept()
    if system is None or system.obfuscator is None:
        await websocket.send_json({"error": "This run has no opt-in obfuscator to stream."})
        await websocket.close()
        return
    session = LiveSession(system.obfuscator)
    await websocket.send_json({"ready": True, **session.describe()})
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            stop = message.get("text") == "stop"
            data = message.get("bytes")
            if not stop and data is None:
                continue
            try:
                reply = await run_in_threadpool(session.flush if stop else session.push,
                                                *(() if stop else (data,)))
            except OptinError as err:
                await websocket.send_json({"error": " ".join(str(err).split())})
                await websocket.close()
                return
            await websocket.send_json({**reply.header(), "final": stop})
            if len(reply.audio):
                await websocket.send_bytes(reply.audio.astype("<f4").tobytes())
            if stop:
                await websocket.close()
                return
    except WebSocketDisconnect:
        return


async def _optin_error(request: Request, exc: Exception) -> Response:
    return _error(str(exc), 400)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(str(exc), 404)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("optin serve: %s %s failed", request.method, request.url.path,
                     exc_info=exc)
    return _error(INTERNAL, 500)


class _Headers:
    """ASGI middleware: the page's security headers on every HTTP response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [(b"content-security-policy", CSP.encode()),
                                       (b"x-content-type-options", b"nosniff"),
                                       (b"referrer-policy", b"no-referrer"),
                                       (b"cache-control", b"no-store")]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(run: ServedRun, limits: UploadLimits | None = None,
               host: str = "127.0.0.1") -> Starlette:
    """The web application over a loaded run (``uvicorn`` or a test client serves it), for a
    server bound to ``host`` (the names it answers to: :mod:`optin.serve.guard`)."""
    routes = [
        Route("/", index),
        Route("/api/run", run_info),
        Route("/api/analyse", analyse_upload, methods=["POST"]),
        Route("/api/analyse/utterance/{utterance:path}", analyse_corpus, methods=["POST"]),
        Route("/api/results/{analysis}/audio/{name}", result_audio),
        Route("/api/results/{analysis}/spectrogram/{name}", result_spectrogram),
        Route("/run/report.md", run_report),
        Route("/run/figures/{name}", run_figure),
        WebSocketRoute("/api/live", live),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Headers), Middleware(Guard, host=host)],
                    exception_handlers={UtteranceError: _not_found, OptinError: _optin_error,
                                        Exception: _internal_error})
    app.state.serve = ServeState(run, limits or UploadLimits(), OrderedDict(), threading.Lock())
    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_folder(folder: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
                 experiment: str | None = None, limits: UploadLimits | None = None) -> None:
    """Load a run folder and serve its page until interrupted (Ctrl-C); the address and a
    warning when it is reachable from other machines go to stderr.

    Raises:
        RunFolderError: the folder cannot be served.
        ServeError: ``host``:``port`` cannot be bound (before anything is printed).
    """
    run = load_run(folder, experiment)
    sockets = bind_sockets(host, port)
    for path in run.links_outside():
        print(f"warning: {path} is a link out of the run folder (to {path.resolve()}); it is "
              "not served", file=sys.stderr)
    if not is_loopback(host):
        print(f"warning: serving on {host}: other machines can reach this page and use the "
              "models; use --host 127.0.0.1 to keep it on this machine", file=sys.stderr)
    print(f"serving '{run.experiment['name']}' of {folder} at http://{_shown(host)}:{port}/ "
          "(Ctrl-C stops)", file=sys.stderr, flush=True)
    serve(run, host, port, limits, sockets=sockets)


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


_BIND_ADVICE = {
    errno.EADDRINUSE: "the port is already in use (another server? choose another --port)",
    errno.EADDRNOTAVAIL: "the address is not one of this machine's (choose another --host)",
    errno.EACCES: "permission denied (ports below 1024 need privileges; choose another --port)",
}


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address of ``host`` at ``port`` (as asyncio would bind
    them), bound here so that a taken port or a foreign host is one error, before serving.

    Raises:
        ServeError: naming the address and what is wrong.
    """
    where = f"{_shown(host)}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError as err:  # socket.gaierror: an unknown name
        raise ServeError(f"cannot serve at {where}: the host cannot be resolved "
                         f"({err.strerror or err}; check --host)") from err
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, address in dict.fromkeys((i[0], i[1], i[2], i[4]) for i in infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(2048)
    except OSError as err:
        for sock in sockets:
            sock.close()
        reason = _BIND_ADVICE.get(err.errno or 0, err.strerror or str(err))
        raise ServeError(f"cannot serve at {where}: {reason}") from err
    return sockets


def serve(run: ServedRun, host: str = "127.0.0.1", port: int = 8000,
          limits: UploadLimits | None = None, threads: int | None = 1,
          sockets: list[socket.socket] | None = None) -> None:
    """Serve a loaded run's page until interrupted (Ctrl-C), on ``sockets`` (default: bound
    here by :func:`bind_sockets`).

    ``threads``: torch's intra-op threads for this process (None: torch's default). One by
    default: the page runs small models on one utterance, and on a 2-core machine shared with
    other work two threads made a 3 s upload take 27 s instead of 1.5 s (docs/results.md).

    Raises:
        ServeError: ``host``:``port`` cannot be bound.
    """
    sockets = sockets if sockets is not None else bind_sockets(host, port)
    if threads is not None:
        torch.set_num_threads(threads)
    config = uvicorn.Config(create_app(run, limits, host), host=host, port=port,
                            log_level="warning", ws_max_size=1 << 20)
    uvicorn.Server(config).run(sockets=sockets)
