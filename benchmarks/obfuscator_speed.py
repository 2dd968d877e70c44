"""Obfuscator speed matrix: every backend x thread count x batch size, side by side.

    python benchmarks/obfuscator_speed.py [--model RUN] [--threads 1,0] [--batch 1,16]
        [--device cpu] [--repeats 20] [--out speed.json]

``--threads 0`` means the libraries' default (all cores). Each (threads, batch) cell runs
``optin.deploy.bench.bench(backend="all")``, which times the backends round-robin so that
they share the machine's load; the table gives the median ms per second of audio (network
only / with the front-end) and the ratio of the fastest to eager PyTorch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from optin.deploy.bench import bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="obfuscator (default: untrained, paper size)")
    parser.add_argument("--threads", default="1,0", help="comma list; 0 = library default")
    parser.add_argument("--batch", default="1,16", help="comma list of batch sizes")
    parser.add_argument("--backend", default="all", help="torch, onnx, onnx-int8 or all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--calibration", type=Path)
    parser.add_argument("--out", type=Path, help="write all results as JSON here")
    args = parser.parse_args(argv)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        for batch in (int(b) for b in args.batch.split(",")):
            result = bench(args.model, backend=args.backend, device=args.device,
                           threads=threads or None, batch=batch, seconds=args.seconds,
                           repeats=args.repeats, calibration=args.calibration)
            rows.append(result)
            backends = result.get("backends", {result["backend"]: result})
            cells = "  ".join(f"{name} {row['ms_per_audio_second']:7.2f}/"
                              f"{row['with_frontend_ms_per_audio_second']:7.2f}"
                              for name, row in backends.items())
            base = backends.get("torch", {}).get("ms_per_audio_second")
            speedup = f"  best x{base / result['ms_per_audio_second']:.2f} vs torch" if base else ""
            print(f"threads {result['threads']!s:>12} batch {batch:3d}: {cells}{speedup}  "
                  f"(floor {result['floor_ms_per_audio_second']:.2f} ms at "
                  f"{result['peak_gflops']:.0f} GFLOP/s)", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
