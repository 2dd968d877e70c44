"""``optin serve`` under attack, through the real server: ``optin serve`` itself in a
subprocess (its stderr is the log read here), uvicorn in a thread where what it answered is
recorded, and headless Chromium for what another web page could make a browser do.

* only the names it binds are answered (DNS rebinding), only its own origin may call it
  (HTTP and WebSocket), also from a real browser;
* links in the run folder that lead out of it are never served;
* uploads whose headers lie are refused within the memory limit, concurrently too;
* a client that hangs up mid-upload is one log line; a taken port or an unbindable host is one
  ``error:`` line with exit 2, before anything says it is serving.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import websockets.exceptions
import websockets.sync.client
from tests.serve.crafted_audio import (
    flac_declaring_no_samples,
    flac_switching_to_eight_channels,
    wav,
)
from tests.serve.servers import (
    CliServer,
    LiveServer,
    Recorder,
    browser_or_skip,
    chrome,
    free_port,
    local_client,
)

from optin.cli import main
from optin.serve.guard import split_host
from optin.serve.run_folder import ServedRun, load_run
from optin.serve.web import create_app

SECRET = "TOP-SECRET: this file lies outside the run folder"


@pytest.fixture(scope="module")
def run(served_run_dir) -> ServedRun:
    return load_run(served_run_dir)


@pytest.fixture(scope="module")
def linked_run(served_run_dir, tmp_path_factory) -> Path:
    """A run folder (the tiny run's results and models) whose report is a link to a file
    outside it, with figures: a real one, a link to it inside the folder and a link out."""
    base = tmp_path_factory.mktemp("linked")
    secret = base / "secret.txt"
    secret.write_text(SECRET)
    folder = base / "run"
    (folder / "figures").mkdir(parents=True)
    shutil.copy(served_run_dir / "results.json", folder / "results.json")
    (folder / "models").symlink_to(served_run_dir / "models")
    (folder / "report.md").symlink_to(secret)
    shutil.copy(next((served_run_dir / "figures").glob("*.png")), folder / "figures" / "ok.png")
    (folder / "figures" / "inside.png").symlink_to("ok.png")
    (folder / "figures" / "evil.png").symlink_to(secret)
    return folder


@pytest.fixture(scope="module")
def server(linked_run, tmp_path_factory):
    with CliServer(linked_run, tmp_path_factory.mktemp("cli")) as cli:
        yield cli


def client_of(server: CliServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, trust_env=False, timeout=120)


def live(url: str, **kwargs):
    return websockets.sync.client.connect(url, proxy=None, open_timeout=30, **kwargs)


# ------------------------------------------------------------------------- Host and Origin
@pytest.mark.parametrize("value, parsed", [
    ("127.0.0.1:8000", ("127.0.0.1", 8000)), ("LocalHost", ("localhost", None)),
    ("[::1]:80", ("::1", 80)), ("[::1]", ("::1", None)), ("::1", None), ("[::1", None),
    ("a.example:", None), ("a.example:99999999", None), ("", None), ("[::1]x", None)])
def test_host_headers_are_read_strictly(value, parsed):
    assert split_host(value) == parsed


def test_only_the_names_it_binds_are_answered(server):
    with client_of(server) as client:
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "localhost",
                     f"[::1]:{server.port}", f"LOCALHOST:{server.port}"):
            assert client.get("/api/run", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example",
                     f"localhost.evil.example:{server.port}", "10.0.0.1", "[::1"):
            refused = client.get("/api/run", headers={"Host": host})
            assert refused.status_code == 421, host
            assert refused.json()["error"].startswith(
                f"This server does not answer to the host {host!r}: open "
                f"http://127.0.0.1:{server.port}/")
        assert client.get("/", headers={"Host": "evil.example"}).status_code == 421
    with socket.create_connection(("127.0.0.1", server.port)) as raw:  # HTTP/1.0: no Host
        raw.sendall(b"GET /api/run HTTP/1.0\r\n\r\n")
        answer = raw.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 421 ") and b"without a Host header" in answer
    rebound = socket.create_connection(("127.0.0.1", server.port))  # evil.example -> here
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        live(f"ws://evil.example:{server.port}/api/live", sock=rebound)
    assert refused.value.response.status_code == 421
    rebound.close()


def test_the_host_given_is_answered_and_a_wildcard_takes_ip_addresses_only(run):
    with local_client(create_app(run, host="optin.lan"), base_url="http://optin.lan:8000") as c:
        assert c.get("/api/run").status_code == 200
        assert c.get("/api/run", headers={"Host": "other.lan"}).status_code == 421
    with local_client(create_app(run, host="0.0.0.0"), base_url="http://192.168.1.4:8000") as c:
        assert c.get("/api/run").status_code == 200
        assert c.get("/api/run", headers={"Host": "[fe80::1]:8000"}).status_code == 200
        refused = c.get("/api/run", headers={"Host": "rebound.example:8000"})
        assert refused.status_code == 421 and "and any IP address" in refused.json()["error"]


def test_requests_from_another_origin_are_refused(server, run, tmp_path):
    own = f"http://127.0.0.1:{server.port}"
    utterance = run.test_rows()[0]["id"]
    speech = wav(1.0)
    with client_of(server) as client:
        mine = client.post(f"/api/analyse/utterance/{utterance}", headers={"Origin": own})
        assert mine.status_code == 200
        audio = f"/api/results/{mine.json()['id']}/audio/original.wav"
        assert client.get(audio).status_code == 200  # no Origin (curl, scripts): allowed
        assert client.post("/api/analyse", content=speech,
                           headers={"Origin": own}).status_code == 200
        for origin in ("http://evil.example", "null", f"http://127.0.0.1:{free_port()}",
                       f"https://127.0.0.1:{server.port}", f"http://localhost:{server.port}",
                       f"{own}/path", "not a url"):
            for method, path, body in (("GET", "/api/run", None), ("GET", "/", None),
                                       ("POST", f"/api/analyse/utterance/{utterance}", None),
                                       ("POST", "/api/analyse", speech), ("GET", audio, None),
                                       ("GET", "/run/figures/ok.png", None)):
                refused = client.request(method, path, content=body,
                                         headers={"Origin": origin})
                assert refused.status_code == 403, (origin, method, path)
                assert refused.json()["error"] == (
                    f"Requests from the origin {origin!r} are refused: only the page itself "
                    f"(http://127.0.0.1:{server.port}) may use this server.")
    assert list(server.uploads.iterdir()) == []


def test_a_websocket_from_another_origin_is_refused(server):
    url = f"ws://127.0.0.1:{server.port}/api/live"
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{free_port()}"):
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            live(url, origin=origin)
        assert refused.value.response.status_code == 403, origin
    for origin in (f"http://127.0.0.1:{server.port}", None):  # its own page; no browser
        with live(url, origin=origin) as ws:
            assert json.loads(ws.recv(timeout=30))["ready"] is True


ATTACKER_PAGE = """<!doctype html><title>another site</title><script>
window.done = (async () => {
  const out = {};
  try { out.get = (await fetch("TARGET/api/run")).status; } catch (e) { out.get = "failed"; }
  try { await fetch("TARGET/api/analyse/utterance/UTTERANCE", {method: "POST", mode: "no-cors"});
        out.post = "sent"; } catch (e) { out.post = "failed"; }
  out.ws = await new Promise(resolve => {
    const ws = new WebSocket("TARGET".replace("http", "ws") + "/api/live");
    ws.onmessage = m => resolve("message " + m.data);
    ws.onclose = e => resolve("closed " + e.code);
  });
  return out;
})();
</script>"""


class _Page(http.server.BaseHTTPRequestHandler):
    """Serves ``self.server.page`` (bytes) at every path."""

    def do_GET(self) -> None:
        page = self.server.page  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args) -> None:
        pass


def _attacker_site(target: str, utterance: str) -> http.server.ThreadingHTTPServer:
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    site.page = ATTACKER_PAGE.replace("TARGET", target).replace(  # type: ignore[attr-defined]
        "UTTERANCE", utterance).encode()
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return site


def test_another_web_page_cannot_drive_the_server_in_a_real_browser(run):
    """A page on another origin (another port of 127.0.0.1) makes Chromium fetch the API and
    open the live WebSocket: every request reaches the server and is refused; a page under a
    rebound name (Chromium resolves rebind.example to 127.0.0.1) is refused; the page itself
    still works in the same browser."""
    chromium, driver = browser_or_skip()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    app = create_app(run)
    recorder = Recorder(app)
    live_server = LiveServer(recorder)
    with live_server as url:
        target = url.rstrip("/")
        site = _attacker_site(target, run.test_rows()[0]["id"])
        foreign = f"http://127.0.0.1:{site.server_address[1]}"
        browser = chrome(chromium, driver, "--host-resolver-rules=MAP rebind.example 127.0.0.1")
        try:
            browser.get(foreign + "/")
            seen = browser.execute_async_script(
                "window.done.then(arguments[arguments.length - 1]);")
            assert seen["get"] == "failed" and seen["post"] == "sent"
            assert seen["ws"] == "closed 1006"
            refused = recorder.from_origin(foreign)
            assert {(e["type"], e["method"], e["path"]) for e in refused} == {
                ("http", "GET", "/api/run"), ("websocket", "GET", "/api/live"),
                ("http", "POST", f"/api/analyse/utterance/{run.test_rows()[0]['id']}")}
            assert {e["status"] for e in refused} == {403}
            assert not app.state.serve.analyses  # nothing was analysed for that page
            browser.get(f"http://rebind.example:{live_server.port}/")
            assert "does not answer to the host" in browser.find_element(By.TAG_NAME,
                                                                         "body").text
            assert recorder.seen[-1]["host"].startswith("rebind.example")
            assert recorder.seen[-1]["status"] == 421
            browser.get(url)
            WebDriverWait(browser, 60, poll_frequency=0.1).until(
                lambda b: b.find_elements(By.CSS_SELECTOR, "#utterance option"))
            ready = browser.execute_async_script("""
                const done = arguments[arguments.length - 1];
                const ws = new WebSocket(`ws://${location.host}/api/live`);
                ws.onmessage = m => { done(JSON.parse(m.data)); ws.close(); };
                ws.onclose = e => done("closed " + e.code);""")
            assert ready["ready"] is True
        finally:
            browser.quit()
            site.shutdown()
    assert {e["status"] for e in recorder.from_origin(target)} <= {101, 200}


# ------------------------------------------------------------------------- links out of the run
def test_links_out_of_the_run_folder_are_never_served(server, linked_run):
    with client_of(server) as client:
        info = client.get("/api/run").json()
        assert info["report"] is None
        assert info["figures"] == ["run/figures/inside.png", "run/figures/ok.png"]
        for path in ("/run/report.md", "/run/figures/evil.png", "/run/figures/..%2Freport.md"):
            response = client.get(path)
            assert response.status_code == 404 and "TOP-SECRET" not in response.text, path
        for name in ("ok.png", "inside.png"):  # a link that stays inside is fine
            assert client.get(f"/run/figures/{name}").content.startswith(b"\x89PNG")
    log = server.log()
    for name in ("report.md", "figures/evil.png"):
        assert f"warning: {linked_run / name} is a link out of the run folder" in log
    assert log.index("is a link out") < log.index("serving 'serve-tiny'")


def test_a_figures_folder_linked_elsewhere_is_not_served(run, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(next(run.folder.glob("figures/*.png")), outside / "private.png")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "figures").symlink_to(outside)
    (folder / "report.md").write_text("# report\n")
    linked = dataclasses.replace(run, folder=folder)
    with local_client(create_app(linked)) as client:
        assert client.get("/api/run").json()["figures"] == []
        assert client.get("/run/figures/private.png").status_code == 404
        assert client.get("/run/report.md").text == "# report\n"
    assert linked.links_outside() == [folder / "figures" / "private.png"]


# ------------------------------------------------------------------------- uploads that lie
def test_uploads_whose_headers_lie_are_refused_within_the_memory_limit(server):
    """Four concurrent hours of 48 kHz stereo whose header says 0 samples (the whole decode
    would take 1.4 GB each), and files of 8 channels: refused, the server under 1 GB."""
    hour = flac_declaring_no_samples(3600)
    with client_of(server) as client, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.post("/api/analyse", content=hour), range(4)))
        for answer in answers:
            assert answer.status_code == 413
            assert answer.json() == {"error": "The audio lasts more than the 30 s limit."}
        for data in (wav(1.0, channels=8), flac_switching_to_eight_channels()):
            answer = client.post("/api/analyse", content=data)
            assert answer.status_code == 400
            assert answer.json() == {"error": "The audio has 8 channels; at most 2 are accepted."}
        assert client.get("/api/run").status_code == 200
    peak = server.peak_memory()
    if peak is not None:
        assert peak < 1 << 30, f"optin serve peaked at {peak / 2**20:.0f} MiB"
    assert list(server.uploads.iterdir()) == []


# ------------------------------------------------------------------------- hang-ups and binds
def test_a_client_hanging_up_mid_upload_is_one_log_line(server):
    before = server.log()
    body = (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n" + wav(1.0)[:20_000])
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(b"POST /api/analyse HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                    b"Content-Type: multipart/form-data; boundary=XyZ\r\n"
                    b"Content-Length: 1000000\r\n\r\n" % server.port + body)
        time.sleep(0.5)
    deadline = time.time() + 30
    while server.log() == before and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # anything else it would log
    added = server.log()[len(before):].splitlines()
    assert len(added) == 1, added
    assert added[0].startswith("optin serve: 127.0.0.1:")
    assert added[0].endswith("hung up during its upload to /api/analyse; nothing was kept")
    with client_of(server) as client:
        assert client.get("/api/run").status_code == 200
    assert list(server.uploads.iterdir()) == []


def _serve_in_thread(args: list[str]) -> int:
    """``optin serve`` in-process; fails (instead of serving forever) if it starts serving."""
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(main(["serve", *args])), daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert status, "optin serve started serving instead of refusing the address"
    return status[0]


def test_a_taken_port_is_one_error_line_before_serving(served_run_dir, capsys):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert _serve_in_thread([str(served_run_dir), "--port", str(port)]) == 2
    assert capsys.readouterr().err == (
        f"error: cannot serve at 127.0.0.1:{port}: the port is already in use (another server? "
        "choose another --port)\n")


@pytest.mark.parametrize("host, reason", [
    ("192.0.2.1", "the address is not one of this machine's (choose another --host)"),
    ("no-such-host.invalid", "the host cannot be resolved ("),
])
def test_an_unbindable_host_is_one_error_line_before_serving(served_run_dir, capsys, host,
                                                             reason):
    port = free_port()
    assert _serve_in_thread([str(served_run_dir), "--host", host, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot serve at {host}:{port}: {reason}")
    assert err.count("\n") == 1 and "serving" not in err and "warning" not in err
