"""How far a causal obfuscator's stream is from offline obfuscation of the same audio.

For each chunk size, speech-like waveforms (or the audio files given) are streamed in pieces
of random length, and the stream's frames are compared with the offline path
(``Obfuscator(wave)``: per-utterance normalised features) in those normalised units: the max
absolute difference over every bin of every frame. The paper's obfuscator streamed with its
windows is measured the same way when ``--paper`` is given (its error is an approximation,
not rounding).

    python benchmarks/stream_exactness.py [--model RUN_OR_CHECKPOINT] [--files A.wav ...]
"""

import argparse
import json


def main() -> None:
    import numpy as np
    import torch

    from optin.audio.features import FeatureConfig
    from optin.audio.io import load_audio
    from optin.deploy.causal_stream import open_stream
    from optin.deploy.export import probe_input
    from optin.models.causal_obfuscator import CausalObfuscator, CausalObfuscatorConfig
    from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
    from optin.privacy.obfuscator import Obfuscator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="obfuscator run or checkpoint (default: untrained "
                        "causal obfuscator of the default size, seed 0)")
    parser.add_argument("--files", nargs="*", default=[], help="audio files to stream")
    parser.add_argument("--chunks", default="10,20,50,100,1000", help="chunk sizes in ms")
    parser.add_argument("--paper", action="store_true",
                        help="also the paper's obfuscator (untrained, seed 0), windowed")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.model:
        obfuscator = Obfuscator.load(args.model)
    else:
        obfuscator = Obfuscator(CausalObfuscator(CausalObfuscatorConfig(residual=False)),
                                FeatureConfig())
    cfg = obfuscator.features
    waves = [load_audio(f, sample_rate=cfg.sample_rate) for f in args.files] or [
        probe_input("wave", cfg, 1, frames, seed=i)[0]
        for i, frames in enumerate((57, 203, 311, 498))]
    models = [("given" if args.model else "causal (untrained)", obfuscator)]
    if args.paper:
        models.append(("paper (untrained), windowed",
                       Obfuscator(Generator(GeneratorConfig.obfuscator()), cfg)))
    rng = np.random.default_rng(0)
    rows = []
    for name, model in models:
        for chunk in (float(c) for c in args.chunks.split(",")):
            worst = 0.0
            for wave in waves:
                offline = model(wave)
                step = 10.0 if model.streaming_native else 40.0  # the paper's: 4-frame steps
                stream = open_stream(model, chunk_ms=step * -(-chunk // step), phase="input")
                out = stream.process(wave, piece=int(rng.integers(1, 4000)))
                logmag = torch.from_numpy(out.features * out.std[None].astype(np.float32)
                                          + out.mean[None].astype(np.float32))  # log1p |X|
                ours = (logmag - offline.mean) / offline.std
                worst = max(worst, float((ours - offline.features).abs().max()))
            rows.append({"model": name, "chunk_ms": chunk, "max_abs_error": worst,
                         "utterances": len(waves), "latency_ms": stream.latency_ms})
            print(json.dumps(rows[-1]))


if __name__ == "__main__":
    main()
