"""FLOP counts (three ways) and the benchmark's numbers, JSON and errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from optin.audio.features import FeatureConfig
from optin.checkpoint import save_checkpoint
from optin.deploy.bench import PAPER_TABLE1, audio_flops, bench, format_bench, torch_threads
from optin.deploy.flops import conv_flops, counter_flops
from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
from optin.privacy.obfuscator import OBFUSCATOR_KIND

TINY = {"repeats": 2, "warmup": 1, "seconds": 0.25, "threads": 1}


def obfuscator_flops_by_hand(c: int, r: int, fp: int, tp: int) -> int:
    """The module docstring's layer table of cyclegan_vc2, written out (2 FLOPs per MAC)."""
    f2, t2, f4, t4 = fp // 2, tp // 2, fp // 4, tp // 4
    macs = (
        2 * (c * fp * tp * 1 * 5 * 15)  # input: conv and gate, 1 -> C, k(5, 15)
        + 2 * (2 * c * f2 * t2 * c * 25)  # down1: C -> 2C, k5, stride 2
        + 2 * (2 * c * f4 * t4 * 2 * c * 25)  # down2: 2C -> 2C
        + 2 * c * t4 * 2 * c * f4  # to1d: 1x1 from 2C*F/4 channels
        + r * (2 * (4 * c * t4 * 2 * c * 3) + 2 * c * t4 * 4 * c * 3)  # residual blocks
        + 2 * c * f4 * t4 * 2 * c  # to2d
        + 8 * c * f4 * t4 * 2 * c * 25  # up1: 2C -> 8C before PixelShuffle
        + 4 * c * f2 * t2 * 2 * c * 25  # up2: 2C -> 4C
        + 1 * fp * tp * c * 75  # output: C -> 1, k(5, 15)
    )
    return 2 * macs


def test_conv_flops_of_single_layers():
    conv = nn.Conv2d(3, 8, (3, 5), stride=2, padding=1)
    x = torch.zeros(2, 3, 20, 30)
    out = conv(x)
    assert conv_flops(conv, x) == {"Conv2d": 2 * out.numel() * 3 * 15, "total": 2 * out.numel()
                                   * 3 * 15}
    grouped = nn.Conv1d(8, 8, 3, groups=4)
    assert conv_flops(grouped, torch.zeros(1, 8, 10))["total"] == 2 * (8 * 8) * 2 * 3
    net = nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 3))
    assert conv_flops(net, torch.zeros(5, 10)) == {"0": 400, "2": 120, "total": 520}


def test_obfuscator_flops_agree_three_ways():
    net = Generator(GeneratorConfig.obfuscator()).eval()
    x = torch.zeros(1, 161, 101)  # one second of audio: padded to (164, 104)
    hooks = conv_flops(net, x)
    assert hooks["total"] == counter_flops(net, x) == obfuscator_flops_by_hand(16, 3, 164, 104)
    assert hooks["up2.conv"] > hooks["down1.conv.0"] > hooks["input.conv"]
    per_second = audio_flops(net, FeatureConfig())
    assert per_second["model"] == hooks["total"]
    assert per_second["frontend"] == 2 * 101 * 322 * 320  # DFT conv: 2F outputs x n_fft taps


def test_torch_threads_restores_the_setting():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"), torch_threads(0):
        pass


def test_bench_torch_untrained_paper_size():
    result = bench(**TINY)
    assert result["untrained"] and "untrained" in result["model"]
    assert result["parameters"] == 379_441 and result["frames"] == 1 + 4000 // 160
    ms = result["ms_per_audio_second"]
    assert result["ms_per_audio_second_min"] <= ms <= result["ms_per_audio_second_max"]
    assert result["ms_per_audio_second_q1"] <= result["ms_per_audio_second_q3"]
    full = result["with_frontend_ms_per_audio_second"]
    assert result["real_time_factor"] == pytest.approx(full / 1000)
    assert result["throughput_audio_seconds_per_second"] == pytest.approx(1000 / full)
    assert result["achieved_gflops"] == pytest.approx(result["flops_per_audio_second"] / ms / 1e6)
    assert [row["ms_per_audio_second"] for row in result["paper_table1"]] == [
        v for _, v in PAPER_TABLE1]
    assert result["paper_table1"][0]["ratio"] == pytest.approx(1923 / ms)
    assert result["peak_gflops"] > 0 and result["peak_memory_mb"] > 0
    json.dumps(result)  # serialisable
    text = format_bench(result)
    assert "Raspberry Pi 2B" in text and "untrained" in text


def test_bench_batched_loads_a_checkpoint(tmp_path):
    net = Generator(GeneratorConfig.obfuscator())
    save_checkpoint(tmp_path / "obfuscator", net.state_dict(), {
        "kind": OBFUSCATOR_KIND, "architecture": net.config.to_dict(),
        "features": FeatureConfig().to_dict()})
    result = bench(tmp_path, batch=3, **TINY)
    assert not result["untrained"] and result["model"] == str(tmp_path)
    assert result["batch"] == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"backend": "tpu"}, "unknown backend"),
    ({"batch": 0}, "batch must be >= 1"),
    ({"seconds": 0.005}, "too short"),
    ({"device": "npu"}, "unknown device"),
])
def test_bench_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench(**{**TINY, **kwargs})


@pytest.mark.slow
def test_bench_all_backends_reports_the_best():
    result = bench(backend="all", **TINY)
    assert set(result["backends"]) == {"torch", "onnx", "onnx-int8"}
    best = result["best_backend"]
    assert result["backend"] == best
    assert result["ms_per_audio_second"] == min(
        row["ms_per_audio_second"] for row in result["backends"].values())
    assert "synthetic" in result["calibration"]


def test_cli_bench_prints_one_json_object(capsys):
    from optin.cli import main

    assert main(["bench", "--repeats", "2", "--warmup", "0", "--seconds", "0.25",
                 "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ms_per_audio_second"] > 0 and result["backend"] == "torch"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cli_bench_cuda_without_gpu_is_an_error(capsys):
    from optin.cli import main

    assert main(["bench", "--device", "cuda", "--repeats", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: --device cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_on_cuda():
    result = bench(device="cuda", batch=2, repeats=3, warmup=1, seconds=1.0)
    assert result["device"].startswith("cuda") and result["ms_per_audio_second"] > 0
    assert result["memory_measure"] == "torch.cuda.max_memory_allocated"
