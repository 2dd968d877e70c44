"""``optin serve`` on a tiny trained run: the run's models, the analysis, every endpoint (with
Starlette's test client), live streaming over the WebSocket, and the page in a real headless
Chromium (Selenium with Debian's chromedriver).

Every test here shares one tiny run (``served_run_dir``, trained once per session). What an
attacker tries against the page (foreign hosts and origins, links out of the run folder, lying
audio headers, hang-ups, taken ports) is in ``test_served_safely.py``.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tests.conftest import voiced
from tests.serve.servers import LOCAL, LiveServer, browser_or_skip, chrome, local_client

from optin.audio.io import load_audio
from optin.corpora.feature_cache import FeatureCache
from optin.serve import web
from optin.serve.analysis import analyse_utterance, analyse_wave, predict
from optin.serve.run_folder import RunFolderError, ServedRun, load_run
from optin.serve.uploads import UploadLimits
from optin.serve.web import INTERNAL, create_app
from optin.training.classifier import evaluate_classifier

STATIC = Path(web.__file__).parent / "static"
LIVE = LOCAL.replace("http", "ws", 1) + "/api/live"  # the test client's own default: testserver


@pytest.fixture(scope="module")
def run(served_run_dir) -> ServedRun:
    return load_run(served_run_dir)


@pytest.fixture(scope="module")
def client(run):
    with local_client(create_app(run)) as c:
        yield c


@pytest.fixture
def upload_dir(tmp_path, monkeypatch) -> Path:
    """Uploads land here instead of the system's temp folder, so tests see what is left."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def wav_file(path: Path, seconds: float = 1.5, f0: float = 150.0) -> Path:
    sf.write(path, voiced(seconds, 16000, f0=f0), 16000, subtype="PCM_16")
    return path


def labels_of(analysis: dict) -> dict[str, str | None]:
    """system -> T's label, and (system, attribute, family, kind) -> the attacker's label."""
    found: dict = {}
    for system in analysis["systems"]:
        found[system["key"]] = (system["target"] or {}).get("label")
        for attribute, guesses in system["attacks"].items():
            for guess in guesses:
                for kind in ("ignorant", "informed"):
                    if guess[kind]:
                        found[(system["key"], attribute, guess["family"], kind)] = \
                            guess[kind]["label"]
    return found


# ------------------------------------------------------------------------- the run's models
def test_finds_every_model_of_the_run(run, served_run_dir):
    assert run.experiment["name"] == "serve-tiny" and run.seed == 0
    assert set(run.systems) == {"opt-in", "mcadams"}
    assert run.systems["opt-in"].obfuscator is not None
    assert run.systems["mcadams"].mcadams is not None
    assert run.systems["mcadams"].mcadams_manifest is not None
    assert [a.family for a in run.ignorant["gender"]] == ["deepspeech2"]
    for key in ("opt-in", "mcadams"):
        (informed,) = run.systems[key].informed["gender"]
        assert "protected" in informed.model_dir.name
    assert run.extractor is not None and run.test_rows()
    with pytest.raises(RunFolderError, match=r"no experiment named 'nope'.*serve-tiny"):
        load_run(served_run_dir, "nope")


def test_analysis_gives_what_the_experiment_harness_gives(run):
    """The features and T's predictions (original and opt-in) that the page shows for a test
    utterance are the harness's: the feature cache's features, ``evaluate_classifier``'s vote."""
    assert run.manifest is not None
    obfuscator = run.systems["opt-in"].obfuscator
    assert obfuscator is not None
    harness = {name: evaluate_classifier(run.target_dir, run.manifest, "test", progress=False,
                                         classifier=run.target, transform=transform,
                                         return_predictions=True)
               for name, transform in (("original", None),
                                       ("opt-in", obfuscator.obfuscate_features))}
    cache = FeatureCache.for_manifest(run.manifest, run.features)
    for row in run.test_rows()[:4]:
        analysis = analyse_utterance(run, row["id"])
        index = harness["original"]["ids"].index(row["id"])
        for name in ("original", "opt-in"):
            assert analysis.result(name).target.label == harness[name]["predictions"][index]
        assert analysis.truth == {"speaker": row["speaker"], "gender": row["gender"]}
        cached = cache.load(run.manifest.audio_path(row)).features
        assert torch.allclose(analysis.result("original").features, cached, atol=1e-5)
        assert predict(run.target, cached) == analysis.result("original").target


# ------------------------------------------------------------------------- the endpoints
def test_the_page_and_its_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("index.html", "app.js", "style.css"):
        text = (STATIC / asset).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert client.get("/static/app.js").status_code == 200


def test_run_info_lists_systems_utterances_and_links(client, run):
    info = client.get("/api/run").json()
    assert info["experiment"] == "serve-tiny" and info["permitted"] == "speaker"
    assert [s["key"] for s in info["systems"]] == list(run.systems)
    assert all(s["makes_audio"] for s in info["systems"]) and info["verification"]
    assert len(info["utterances"]) == len(run.test_rows()) and info["live"]["system"] == "opt-in"
    assert info["report"] == "run/report.md" and info["figures"]
    assert client.get("/" + info["report"]).status_code == 200
    figure = client.get("/" + info["figures"][0])
    assert figure.status_code == 200 and figure.content.startswith(b"\x89PNG")
    for bad in ("/run/figures/..%2Fresults.json", "/run/figures/nothing.png"):
        response = client.get(bad)
        assert response.status_code == 404 and "results" not in response.text.lower()[20:]


def test_upload_predict_and_audio_out(client, run, tmp_path, upload_dir):
    path = wav_file(tmp_path / "speech.wav")
    response = client.post("/api/analyse", content=path.read_bytes())
    assert response.status_code == 200, response.text
    analysis = response.json()
    assert [s["key"] for s in analysis["systems"]] == ["original", "opt-in", "mcadams"]
    assert analysis["truth"] == {} and abs(analysis["seconds"] - 1.5) < 0.01
    direct = analyse_wave(run, load_audio(path)).to_dict()
    assert labels_of(analysis) == labels_of(direct)
    by_key = {s["key"]: s for s in analysis["systems"]}
    assert by_key["opt-in"]["agrees"] == (by_key["opt-in"]["target"]["label"]
                                          == by_key["original"]["target"]["label"])
    assert by_key["opt-in"]["attacks"]["gender"][0]["informed"] is not None
    assert by_key["original"]["verification"] is None
    assert all(-1.0 <= by_key[k]["verification"] <= 1.0 for k in ("opt-in", "mcadams"))
    for key in ("original", "opt-in", "mcadams"):
        audio = client.get(f"/api/results/{analysis['id']}/audio/{key}.wav")
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        wave, rate = sf.read(io.BytesIO(audio.content))
        assert rate == 16000 and len(wave) == 24000 and np.abs(wave).max() > 0.01
        picture = client.get(f"/api/results/{analysis['id']}/spectrogram/{key}.png")
        assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    assert client.get(f"/api/results/{analysis['id']}/audio/adr.wav").status_code == 404
    assert client.get(f"/api/results/{analysis['id']}/audio/opt-in.mp3").status_code == 404
    assert client.get("/api/results/0123/audio/opt-in.wav").status_code == 404
    assert list(upload_dir.iterdir()) == []


def test_a_test_utterance_comes_with_its_true_labels(client, run):
    row = run.test_rows()[0]
    analysis = client.post(f"/api/analyse/utterance/{row['id']}").json()
    assert analysis["truth"] == {"speaker": row["speaker"], "gender": row["gender"]}
    missing = client.post("/api/analyse/utterance/no-such-id")
    assert missing.status_code == 404
    assert missing.json() == {"error": "utterance 'no-such-id' is not in the run's test split"}


@pytest.mark.parametrize("body, status, message", [
    (b"not audio at all, " * 100, 400, "The file is not audio that can be decoded"),
    (b"", 400, "The upload is empty"),
])
def test_bad_uploads_get_one_sentence(client, upload_dir, body, status, message):
    response = client.post("/api/analyse", content=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error.startswith(message) and "\n" not in error and "Traceback" not in error
    assert str(upload_dir) not in error
    assert list(upload_dir.iterdir()) == []


def test_limits_on_size_and_duration(run, tmp_path, upload_dir):
    with local_client(create_app(run, UploadLimits(max_bytes=40_000, max_seconds=1.0))) as small:
        big = small.post("/api/analyse", content=b"\x00" * 50_000)
        assert big.status_code == 413 and "larger than" in big.json()["error"]
        chunked = small.post("/api/analyse", content=iter([b"\x00" * 30_000] * 2))
        assert chunked.status_code == 413 and "larger than" in chunked.json()["error"]
        long = small.post("/api/analyse", content=wav_file(tmp_path / "a.wav", 1.2).read_bytes())
        assert long.status_code == 413
        assert long.json()["error"] == "The audio lasts 1.2 s; the limit is 1 s."
    assert list(upload_dir.iterdir()) == []


def test_an_unexpected_failure_is_one_sentence_not_a_traceback(run, tmp_path, monkeypatch,
                                                              upload_dir):
    def broken(*args, **kwargs):
        raise RuntimeError("boom in /secret/place")

    monkeypatch.setattr(web, "analyse_wave", broken)
    with local_client(create_app(run), raise_server_exceptions=False) as c:
        response = c.post("/api/analyse", content=wav_file(tmp_path / "a.wav").read_bytes())
    assert response.status_code == 500 and response.json() == {"error": INTERNAL}
    assert list(upload_dir.iterdir()) == []


# ------------------------------------------------------------------------- live mode
def test_live_streams_through_the_streaming_obfuscator(client, run):
    wave = voiced(1.0, 16000)
    got, headers = [], []
    with client.websocket_connect(LIVE) as ws:
        ready = ws.receive_json()
        assert ready["ready"] and ready["sample_rate"] == 16000 and ready["latency_ms"] > 0
        for i in range(0, len(wave), 2048):
            ws.send_bytes(wave[i:i + 2048].astype("<f4").tobytes())
            header = ws.receive_json()
            headers.append(header)
            if header["samples"]:
                got.append(np.frombuffer(ws.receive_bytes(), "<f4"))
        ws.send_text("stop")
        final = ws.receive_json()
        assert final["final"]
        got.append(np.frombuffer(ws.receive_bytes(), "<f4"))
    out = np.concatenate(got)
    assert len(out) == len(wave) and np.isfinite(out).all() and np.abs(out).max() > 0.01
    assert all(h["compute_ms"] >= 0 and h["latency_ms"] == ready["latency_ms"] for h in headers)
    obfuscator = run.systems["opt-in"].obfuscator
    from optin.deploy.causal_stream import open_stream
    from optin.deploy.stream_io import default_phase

    stream = open_stream(obfuscator, phase=default_phase(obfuscator))
    offline = stream.process(wave, piece=2048).audio
    assert np.allclose(out, offline, atol=1e-4)


def test_live_refuses_bad_samples_in_one_sentence(client):
    with client.websocket_connect(LIVE) as ws:
        ws.receive_json()
        ws.send_bytes(b"\x00\x01\x02")
        assert ws.receive_json() == {"error": "Live audio must arrive as 32-bit float samples."}


# ------------------------------------------------------------------------- a real browser
def page_labels(browser) -> dict:
    """What the page shows, in the shape of :func:`labels_of`."""
    return browser.execute_script("""
        const found = {};
        for (const card of document.querySelectorAll('.card')) {
          const key = card.dataset.system;
          const t = card.querySelector('.t-label');
          found[key] = t ? t.dataset.label : null;
          for (const table of card.querySelectorAll('table[data-attribute]')) {
            for (const row of table.querySelectorAll('tr[data-family]')) {
              for (const cell of row.querySelectorAll('td[data-kind]')) {
                found[[key, table.dataset.attribute, row.dataset.family,
                       cell.dataset.kind].join('|')] = cell.dataset.label;
              }
            }
          }
        }
        return found;""")


def test_the_page_in_a_real_browser(run, tmp_path):
    chromium, driver = browser_or_skip()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path = wav_file(tmp_path / "speech.wav", seconds=1.5)
    expected = {("|".join(k) if isinstance(k, tuple) else k): v
                for k, v in labels_of(analyse_wave(run, load_audio(path)).to_dict()).items()}
    shots = Path(os.environ.get("OPTIN_SCREENSHOTS", tmp_path))
    with LiveServer(create_app(run)) as url:
        browser = chrome(chromium, driver)
        try:
            browser.get(url)
            wait = WebDriverWait(browser, 120, poll_frequency=0.1)
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#utterance option"))
            browser.find_element(By.ID, "file").send_keys(str(path))
            wait.until(lambda b: b.find_element(By.ID, "results").is_displayed()
                       or b.find_element(By.ID, "error").is_displayed())
            assert not browser.find_element(By.ID, "error").is_displayed(), \
                browser.find_element(By.ID, "error").text
            assert page_labels(browser) == expected
            duration = wait.until(lambda b: b.execute_script(
                "const a = document.querySelector('.card[data-system=\"opt-in\"] audio');"
                "return a && a.readyState >= 1 ? a.duration : null;"))
            assert duration == pytest.approx(1.5, abs=0.01)
            wait.until(lambda b: b.execute_script(
                "return [...document.querySelectorAll('.card img')].every("
                "i => i.complete && i.naturalWidth > 0);"))
            browser.save_screenshot(str(shots / "serve-upload.png"))
            # live mode with Chromium's fake microphone: protected audio comes back, timed
            browser.find_element(By.ID, "live").click()
            wait.until(lambda b: b.find_element(By.ID, "live-stats").get_attribute(
                "data-measured"))
            browser.find_element(By.ID, "live").click()
            assert not browser.find_element(By.ID, "error").is_displayed(), \
                browser.find_element(By.ID, "error").text
            assert int(browser.find_element(By.ID, "live-stats").get_attribute(
                "data-measured")) > 0
        finally:
            browser.quit()
    assert (shots / "serve-upload.png").stat().st_size > 10_000
