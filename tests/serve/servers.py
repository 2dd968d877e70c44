"""Real servers for the serve tests: uvicorn in a thread, ``optin serve`` in a subprocess, a
recorder of what the server answered, and headless Chromium (Selenium, Debian's driver)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers
from starlette.testclient import TestClient

import optin

SRC = Path(optin.__file__).resolve().parents[1]
LOCAL = "http://127.0.0.1:8000"  # a Host the page answers to, for Starlette's test client


def local_client(app: Any, **kwargs: Any) -> TestClient:
    """Starlette's test client, addressing the app as 127.0.0.1 (the page refuses others)
    unless ``base_url`` says otherwise."""
    return TestClient(app, **{"base_url": LOCAL, **kwargs})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser_or_skip() -> tuple[str, str]:
    """Chromium and its driver from Debian's packages; absent: skip, but fail under CI."""
    found = [shutil.which(n) for n in ("chromium", "chromedriver")]
    try:
        import selenium  # noqa: F401
    except ImportError:
        found.append(None)
    if all(found):
        return found[0], found[1]  # type: ignore[return-value]
    reason = ("chromium, chromium-driver (apt-get install chromium chromium-driver) and "
              "selenium (pip install -e '.[dev]') are needed for the browser test")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}; .ci/run installs them")
    pytest.skip(reason)


def chrome(chromium: str, driver: str, *flags: str):
    """Headless Chromium with a fake microphone, and any extra command-line ``flags``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1500", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
                 "--disable-extensions", "--no-first-run", *flags):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


class LiveServer:
    """uvicorn serving an app on a free localhost port in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}/"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Recorder:
    """ASGI wrapper that notes every request and what the app answered (status; 101 for an
    accepted WebSocket, 403 for one closed before it was accepted). Observes, changes nothing."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        entry = {"type": scope["type"], "method": scope.get("method", "GET"),
                 "path": scope["path"], "origin": headers.get("origin"),
                 "host": headers.get("host"), "status": None}
        self.seen.append(entry)

        async def recording(message: Any) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                entry["status"] = message["status"]
            elif kind == "websocket.accept":
                entry["status"] = 101
            elif kind == "websocket.close" and entry["status"] is None:
                entry["status"] = 403
            await send(message)

        await self.app(scope, receive, recording)

    def from_origin(self, origin: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["origin"] == origin]


class CliServer:
    """``optin serve FOLDER --port P`` in a subprocess (as a user runs it): its stderr goes to
    a file, its uploads' temporary files to ``tmp``/uploads."""

    def __init__(self, folder: Path, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.uploads = tmp / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.stderr_path = tmp / "serve.stderr"
        self.command = [sys.executable, "-c",
                        "import sys; from optin.cli import main; sys.exit(main(sys.argv[1:]))",
                        "serve", str(folder), "--port", str(self.port), *args]
        self.env = {**os.environ, "TMPDIR": str(self.uploads), "OMP_NUM_THREADS": "1",
                    "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> CliServer:
        with self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(self.command, stderr=err, env=self.env,
                                            stdout=subprocess.DEVNULL)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"optin serve exited {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/api/run", timeout=5, trust_env=False).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        pytest.fail(f"optin serve did not answer within 180 s: {self.log()}")

    def __exit__(self, *exc) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def peak_memory(self) -> int | None:
        """The process's peak resident memory in bytes (Linux: VmHWM), None elsewhere."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status")
        if not status.is_file():
            return None
        line = next(ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
