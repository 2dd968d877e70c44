"""The on-device commands: ``optin stream`` (obfuscate chunk by chunk), ``optin export`` (ONNX,
float32 or int8) and ``optin bench`` (time per second of audio)."""

from __future__ import annotations

import argparse
from pathlib import Path

from optin.cli.common import COUNT, NON_NEGATIVE, POSITIVE, SAMPLE_RATE, Subcommands, add_command
from optin.errors import ConfigError
from optin.files import prepare_out_file


def add_stream(sub: Subcommands) -> None:
    p = add_command(sub, "stream", _stream,
            "obfuscate a stream chunk by chunk: a file, raw PCM on stdin, or a microphone")
    p.add_argument("--model", type=Path, required=True, help="obfuscator run or checkpoint")
    p.add_argument("--input", default="-",
                   help="audio file, '-' for raw 16-bit mono PCM on stdin (default), or 'mic'")
    p.add_argument("--output", default="-",
                   help="audio file (.wav, .flac, .ogg, .mp3, .aiff or .au: the format follows "
                        "the suffix), or '-' for raw 16-bit PCM on stdout (default)")
    p.add_argument("--chunk-ms", type=POSITIVE,
                   help="audio per network run, up to 10000: the paper's obfuscator a multiple "
                        "of 40 (default 120), a causal one a multiple of 10 (default 10); "
                        "other values are refused, not rounded")
    p.add_argument("--rate", type=SAMPLE_RATE, metavar="HZ",
                   help="sample rate of raw PCM / microphone input and raw PCM output, "
                        "4000 to 384000 (default 16000; refused when input and output are "
                        "files)")
    p.add_argument("--window-ms", type=POSITIVE,
                   help="the paper's obfuscator: audio per network run, a multiple of 40 "
                        "(default and least: what covers the receptive field; at most what "
                        "fits a 512 MiB budget)")
    p.add_argument("--phase", choices=["input", "griffin-lim"],
                   help="resynthesis phase: the input's own, or per-chunk Griffin-Lim (default: "
                        "the input's only when the permitted task is speaker identity)")
    p.add_argument("--seconds", type=POSITIVE, help="with --input mic: stop after this long")


def _stream(args: argparse.Namespace) -> int:
    from optin.deploy.stream_io import stream_command

    stream_command(args.model, source=args.input, output=args.output, chunk_ms=args.chunk_ms,
                   rate=args.rate, window_ms=args.window_ms, phase=args.phase,
                   seconds=args.seconds)
    return 0


def add_export(sub: Subcommands) -> None:
    p = add_command(sub, "export", _export,
            "export an obfuscator to ONNX (float32 or int8) for on-device use")
    p.add_argument("--model", type=Path, required=True, help="obfuscator run or checkpoint")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--int8", action="store_true",
                   help="static int8 quantization, calibrated on --calibration")
    p.add_argument("--int8-layers", choices=["spatial", "all"], default="spatial",
                   help="quantize the heavy 2-D convs only (default; keeps the target's "
                        "answers) or every conv (faster)")
    p.add_argument("--calibration", type=Path,
                   help="manifest whose train rows calibrate int8 (default: the obfuscator's "
                        "training manifest)")
    p.add_argument("--streaming", action="store_true",
                   help="a causal obfuscator's stream step: one chunk + the state in, the "
                        "obfuscated frames + the new state out")
    p.add_argument("--features-only", action="store_true",
                   help="graph from normalised features (B, 161, T) instead of the waveform")
    p.add_argument("--check-target", type=Path, metavar="TARGET",
                   help="also measure how often the target's predictions on int8-obfuscated "
                        "input match float32 (needs --manifest)")
    p.add_argument("--manifest", type=Path, help="manifest for --check-target")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--cache-dir", type=Path, help="feature cache for --check-target")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _export(args: argparse.Namespace) -> int:
    import json

    from optin.checkpoint import checkpoint_files
    from optin.deploy.export import export_onnx

    if (args.check_target is None) != (args.manifest is None):
        raise ConfigError("--check-target and --manifest go together")
    read = [args.model, args.check_target, args.calibration, args.manifest]
    prepare_out_file(args.out, inputs=[f for p in read if p for f in checkpoint_files(p)])
    if args.streaming:
        from optin.deploy.stream_graph import export_streaming

        meta = export_streaming(args.model, args.out, int8=args.int8,
                                calibration=args.calibration)
        print(json.dumps({"export": meta}) if args.json else
              f"wrote {args.out}: {meta['graph']} graph, {meta['quantization']}; inputs "
              f"{meta['input']}; look-ahead {meta['lookahead']} frames")
        return 0
    report = export_onnx(args.model, args.out, int8=args.int8, calibration=args.calibration,
                         include_frontend=not args.features_only, int8_layers=args.int8_layers)
    result: dict = {"export": report.to_dict()}
    if args.check_target is not None:
        from optin.deploy.agreement import int8_agreement

        result["int8_agreement"] = int8_agreement(
            args.model, args.check_target, args.manifest, split=args.split,
            calibration=args.calibration, cache_root=args.cache_dir, layers=args.int8_layers)
    if args.json:
        print(json.dumps(result))
        return 0
    print(report.summary())
    if "int8_agreement" in result:
        check = result["int8_agreement"]
        print(f"target '{check['attribute']}' on {check['utterances']} {check['split']} "
              f"utterances: int8 agrees with float32 on "
              f"{check['agreement_int8_vs_float32']:.2%}, float32 ONNX with PyTorch on "
              f"{check['agreement_onnx_vs_torch']:.2%}; accuracy torch "
              f"{check['target_accuracy_torch']:.3f}, float32 "
              f"{check['target_accuracy_float32']:.3f}, int8 {check['target_accuracy_int8']:.3f}"
              f"; int8 feature error {check['int8_rel_rms_error']:.3f} (relative RMS)")
    return 0


def add_bench(sub: Subcommands) -> None:
    p = add_command(sub, "bench", _bench,
            "time the obfuscator per second of audio, beside the paper's Table 1")
    p.add_argument("--model", type=Path,
                   help="obfuscator run or checkpoint (default: untrained, paper size)")
    p.add_argument("--backend", choices=["torch", "onnx", "onnx-int8", "all"],
                   help="'all' compares them and reports the fastest (default torch; "
                        "with --streaming all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=COUNT, help="intra-op threads (default: all cores)")
    p.add_argument("--batch", type=COUNT, default=1, help="waveforms per call (throughput)")
    p.add_argument("--seconds", type=POSITIVE,
                   help="length of each waveform (default 1; with --streaming 10)")
    p.add_argument("--repeats", type=COUNT, help="timed calls (default 20; --streaming 5)")
    p.add_argument("--warmup", type=NON_NEGATIVE, default=3)
    p.add_argument("--calibration", type=Path, help="manifest for onnx-int8 calibration")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--streaming", action="store_true",
                   help="time a stream chunk by chunk (compute per second of audio, push "
                        "latency; default 10 s of audio, 1 thread, 5 repeats)")
    p.add_argument("--chunk-ms", type=POSITIVE, help="with --streaming: the chunk (default: "
                   "10 for a causal obfuscator, 120 for the paper's)")


def _bench(args: argparse.Namespace) -> int:
    import json

    if args.streaming:
        from optin.deploy.stream_bench import bench_streaming, format_stream_bench

        result = bench_streaming(args.model, backend=args.backend or "all",
                                 threads=args.threads or 1, seconds=args.seconds or 10.0,
                                 chunk_ms=args.chunk_ms, repeats=args.repeats or 5,
                                 calibration=args.calibration)
        print(json.dumps(result) if args.json else format_stream_bench(result))
        return 0
    if args.model is not None and _is_protector(args.model):
        return _bench_protector(args)
    from optin.deploy.bench import bench, format_bench

    result = bench(args.model, backend=args.backend or "torch", device=args.device,
                   threads=args.threads, batch=args.batch, seconds=args.seconds or 1.0,
                   repeats=args.repeats or 20, warmup=args.warmup, calibration=args.calibration)
    print(json.dumps(result) if args.json else format_bench(result))
    return 0


def _is_protector(model: Path) -> bool:
    from optin.checkpoint import read_config
    from optin.privacy.obfuscator import TEMPLATE_KIND, resolve_model_dir

    return read_config(resolve_model_dir(model)).get("kind") == TEMPLATE_KIND


def _bench_protector(args: argparse.Namespace) -> int:
    """A decision-template protector: its deciders and its whole path, batch 1, the CPU."""
    import json

    from optin.deploy.protector_bench import bench_protector, format_protector_bench
    from optin.privacy.obfuscator import Obfuscator

    given = [flag for flag, used in (("--backend", args.backend not in (None, "torch")),
                                     ("--device", args.device != "cpu"),
                                     ("--batch", args.batch != 1),
                                     ("--calibration", args.calibration is not None),
                                     ("--streaming", args.streaming)) if used]
    if given:
        raise ConfigError(f"{args.model}: a decision-template protector is timed with the torch "
                          f"backend on the CPU, one utterance at a time; {given[0]} does not "
                          "apply")
    result = bench_protector(Obfuscator.load(args.model), str(args.model), threads=args.threads,
                             seconds=args.seconds or 3.0, repeats=args.repeats or 20,
                             warmup=args.warmup)
    print(json.dumps(result) if args.json else format_protector_bench(result))
    return 0
