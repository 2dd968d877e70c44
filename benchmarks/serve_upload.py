"""Time from upload to results on the ``optin serve`` page's API, for a file of a given length.

Serves RUN_DIR with uvicorn on a free localhost port (as ``optin serve`` does), uploads a
synthetic voiced WAV of SECONDS seconds REPEATS times, and prints for each: the time until the
analysis (JSON) comes back, and until every system's audio and spectrogram (what the page then
shows) have come back too. Usage:

    python benchmarks/serve_upload.py RUN_DIR [SECONDS=3] [REPEATS=5] [--screenshot OUT.png]

With ``--screenshot=OUT.png`` it also opens the page in headless Chromium, analyses the run's
first test utterance (so the true labels show) and saves a screenshot of the results (Debian's
chromium and chromium-driver). Like ``optin serve``, it runs torch on one thread.
"""

from __future__ import annotations

import io
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import torch
import uvicorn

from optin.serve.run_folder import load_run
from optin.serve.web import create_app


def voiced_wav(seconds: float, rate: int = 16000) -> bytes:
    """A vowel-like signal (harmonics of a gliding F0, syllable envelope) as 16-bit WAV."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140.0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 25))
    x = x * (0.3 + 0.7 * np.sin(2 * np.pi * 1.5 * t) ** 2)
    x = 0.3 * x / np.max(np.abs(x)) + 0.003 * np.random.default_rng(0).standard_normal(len(t))
    buffer = io.BytesIO()
    sf.write(buffer, x.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screenshot(url: str, out: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1480,1000",
                 "--hide-scrollbars"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 300)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#utterance option"))
        browser.find_element(By.ID, "analyse-utterance").click()
        wait.until(lambda b: b.find_element(By.ID, "results").is_displayed())
        wait.until(lambda b: b.execute_script(
            "return [...document.querySelectorAll('.card img')].every("
            "i => i.complete && i.naturalWidth > 0);"))
        print(browser.find_element(By.ID, "status").text)
        height = browser.execute_script("return document.body.scrollHeight;")
        browser.set_window_size(1480, height + 160)  # the whole page in the picture
        browser.save_screenshot(str(out))
    finally:
        browser.quit()


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--screenshot")]
    shot = next((Path(a.split("=", 1)[1]) for a in sys.argv[1:]
                 if a.startswith("--screenshot=")), None)
    run_dir = Path(args[0])
    seconds = float(args[1]) if len(args) > 1 else 3.0
    repeats = int(args[2]) if len(args) > 2 else 5
    torch.set_num_threads(1)  # as optin serve does (optin.serve.web.serve)
    run = load_run(run_dir)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(run), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/"
    body = voiced_wav(seconds)
    answers, complete = [], []
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            for i in range(repeats):
                start = time.perf_counter()
                analysis = client.post("api/analyse", content=body)
                analysis.raise_for_status()
                answers.append(time.perf_counter() - start)
                data = analysis.json()
                for system in data["systems"]:
                    if system["makes_audio"]:
                        for part in (f"audio/{system['key']}.wav",
                                     f"spectrogram/{system['key']}.png"):
                            client.get(f"api/results/{data['id']}/{part}").raise_for_status()
                complete.append(time.perf_counter() - start)
                print(f"upload {i + 1}: analysis {answers[-1]:.2f} s (server "
                      f"{data['elapsed']:.2f} s), with every audio and picture "
                      f"{complete[-1]:.2f} s")
        print(f"{run.experiment['name']}: {len(body)} bytes, {seconds:g} s of audio, "
              f"{len(run.systems)} systems, attacked {', '.join(run.attacked)}: median "
              f"{statistics.median(answers):.2f} s to the analysis, "
              f"{statistics.median(complete):.2f} s to everything shown (first "
              f"{complete[0]:.2f} s)")
        if shot is not None:
            screenshot(url, shot)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


if __name__ == "__main__":
    main()
