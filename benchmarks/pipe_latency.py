"""Wall latency of `optin stream` through a pipe, paced like a microphone.

Starts ``optin stream --model M --input - --output -`` with one thread, waits until it has
loaded (its first log line), then writes speech-like 16-bit PCM to its stdin in pieces of
``--chunk-ms`` at real-time pace, and reads its stdout on another thread. The latency of
output sample ``n`` is the time it was read minus the time input sample ``n`` was written
(the pipe, the decoding, the algorithmic latency and the compute). Reported: median, 99th
percentile and max over every piece after the first second.

    python benchmarks/pipe_latency.py [--model RUN] [--seconds 10] [--chunk-ms 10]

Without ``--model``, an untrained causal obfuscator of the default size is saved to a
temporary folder (speed and latency do not depend on the weights' values).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def untrained_causal(folder: Path) -> Path:
    from optin.audio.features import FeatureConfig
    from optin.checkpoint import save_checkpoint
    from optin.models.causal_obfuscator import CausalObfuscator
    from optin.privacy.obfuscator import CAUSAL_OBFUSCATOR_KIND

    net = CausalObfuscator()
    save_checkpoint(folder / "obfuscator", net.state_dict(), {
        "kind": CAUSAL_OBFUSCATOR_KIND, "architecture": net.config.to_dict(),
        "features": FeatureConfig().to_dict(), "target": {"attribute": "speaker"}})
    return folder


def main() -> None:
    import numpy as np

    from optin.audio.features import FeatureConfig
    from optin.deploy.export import probe_input
    from optin.deploy.stream_io import float_to_pcm16

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunk-ms", type=float, default=10.0)
    args = parser.parse_args()
    rate = 16000
    piece = round(args.chunk_ms * rate / 1000)
    cfg = FeatureConfig()
    wave = probe_input("wave", cfg, 1, cfg.frames(round(args.seconds * rate)))[0]
    data = float_to_pcm16(wave)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(untrained_causal(Path(tmp)))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        code = "import sys; from optin.cli import main; sys.exit(main(sys.argv[1:]))"
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "stream", "--model", model, "--input", "-",
             "--output", "-", "--chunk-ms", str(args.chunk_ms), "--phase", "input"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        first = proc.stderr.readline().decode().strip()  # "stream: ..." once loaded
        read_times: list[tuple[int, float]] = []

        def reader() -> None:
            got = 0
            while True:
                block = proc.stdout.read1(65536)
                if not block:
                    return
                got += len(block) // 2
                read_times.append((got, time.perf_counter()))

        thread = threading.Thread(target=reader)
        thread.start()
        written: list[tuple[int, float]] = []
        start = time.perf_counter()
        for i in range(0, len(wave), piece):
            target = start + i / rate
            while time.perf_counter() < target:
                time.sleep(0.0005)
            proc.stdin.write(data[2 * i:2 * (i + piece)])
            proc.stdin.flush()
            written.append((min(i + piece, len(wave)), time.perf_counter()))
        proc.stdin.close()
        thread.join()
        log = proc.stderr.read().decode()
        proc.wait()
    ends = np.array([n for n, _ in written])
    times = np.array([t for _, t in written])
    latencies = []
    for n_out, t_out in read_times:
        sample = n_out - 1  # the newest sample read
        k = int(np.searchsorted(ends, sample, side="right"))  # the piece that carried it
        if k < len(ends) and ends[k] - piece >= rate:  # skip the first second
            latencies.append(1000.0 * (t_out - times[k]))
    lat = np.array(latencies)
    print(json.dumps({"model": args.model or "untrained causal (default size)",
                      "chunk_ms": args.chunk_ms, "seconds": args.seconds, "stream": first,
                      "latency_ms_median": float(np.median(lat)),
                      "latency_ms_p99": float(np.quantile(lat, 0.99)),
                      "latency_ms_max": float(lat.max()), "reads": len(lat),
                      "optin_log": log.strip().splitlines()[-1] if log.strip() else ""}))


if __name__ == "__main__":
    main()
