"""Front-end quality and speed on a manifest: phase round-trip SNR, Griffin-Lim spectral
convergence, and feature-cache throughput.

    python benchmarks/frontend.py MANIFEST.csv [--clips 20] [--iters 64]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time

from optin.audio.features import (
    FeatureConfig,
    snr_db,
    spectral_convergence,
    spectrogram,
    to_waveform,
)
from optin.audio.io import load_audio
from optin.corpora import Manifest
from optin.corpora.feature_cache import FeatureCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("manifest")
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--iters", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    manifest = Manifest.read(args.manifest)
    rows = manifest.rows[:: max(1, len(manifest) // args.clips)][: args.clips]
    snrs, scs = [], []
    for row in rows:
        wave = load_audio(manifest.audio_path(row))
        spec = spectrogram(wave, return_phase=True)
        back = to_waveform(spec.features, spec.mean, spec.std, phase=spec.phase,
                           n_samples=len(wave))
        snrs.append(snr_db(wave, back))
        gl = to_waveform(spec.features, spec.mean, spec.std, n_samples=len(wave),
                         n_iter=args.iters)
        scs.append(spectral_convergence(spec.magnitude(), gl))
    tmp = tempfile.mkdtemp()
    try:
        cache = FeatureCache(tmp, FeatureConfig())
        start = time.perf_counter()
        report = cache.fill(manifest, workers=args.workers, progress=False)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        cache.fill(manifest, workers=args.workers, progress=False)
        warm = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp)
    print(json.dumps({
        "clips": len(rows),
        "phase_round_trip_snr_db": {"min": min(snrs), "median": statistics.median(snrs)},
        "griffin_lim_iters": args.iters,
        "griffin_lim_spectral_convergence": {"median": statistics.median(scs), "max": max(scs)},
        "cache_utterances": report.computed,
        "cache_cold_s": round(cold, 2),
        "cache_warm_s": round(warm, 2),
        "cache_utterances_per_s": round(report.computed / cold, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
