"""Opening a run folder for serving, and ``optin serve`` on a folder that cannot be served."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from optin.cli import main
from optin.serve.run_folder import RunFolderError, load_run
from optin.serve.spectrogram_png import spectrogram_png
from optin.serve.web import is_loopback


def test_a_missing_folder_says_to_run_the_demo_first(tmp_path):
    with pytest.raises(RunFolderError, match=r"no such run folder; run `optin demo` first"):
        load_run(tmp_path / "optin-demo")


def test_a_folder_without_results_says_so(tmp_path):
    with pytest.raises(RunFolderError, match=r"holds no results.json; run `optin demo`"):
        load_run(tmp_path)


def test_results_without_experiments_are_refused(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(
        {"schema": "optin-results/1", "experiments": [], "rows": []}))
    with pytest.raises(RunFolderError, match="holds no experiment"):
        load_run(tmp_path)


def test_serve_defaults_to_the_demo_folder_and_explains(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: optin-demo: no such run folder; run `optin demo` first")
    assert "Traceback" not in err


def test_serve_refuses_a_bad_port(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--port", "70000"])
    assert "--port" in capsys.readouterr().err


def test_the_cli_does_not_load_the_web_framework_to_start():
    code = ("import sys, optin.cli; optin.cli.build_parser(['serve']); "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True),
                                            ("::1", True), ("0.0.0.0", False),
                                            ("192.168.1.4", False), ("example.org", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_spectrogram_png_is_a_small_png():
    png = spectrogram_png(torch.from_numpy(np.random.default_rng(0).standard_normal(
        (161, 300)).astype(np.float32)), 0.01, 8000.0, "opt-in")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and 2_000 < len(png) < 200_000
