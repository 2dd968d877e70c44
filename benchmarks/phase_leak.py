"""What the phase of streamed audio gives a speaker attacker: the input's own against per-chunk
Griffin-Lim (magnitude only).

A causal obfuscator that permits a task other than speaker identity (its target ``--target``,
e.g. a gender classifier) is trained (or given with ``--obfuscator``); every test utterance of
``--manifest`` is streamed through it in 100 ms chunks and resynthesised with each phase; the
audio's features are then scored by the ignorant ASV (``--xvector``: an x-vector extractor
trained on original speech; enrolment on the original utterances, trials on the protected
ones, and both protected) and by the target (its utterance agreement with the original).
The obfuscated features themselves (no audio) are the reference row.

    python benchmarks/phase_leak.py --manifest M --target T_DIR --xvector X_DIR --out DIR
"""

import argparse
import json
from pathlib import Path


def main() -> None:
    import numpy as np
    import torch

    from optin.audio.io import load_audio
    from optin.audio.segments import segment
    from optin.corpora.manifest import Manifest
    from optin.deploy.causal_stream import open_stream
    from optin.metrics.verification import asv_pairings
    from optin.models.deepspeech2 import vote
    from optin.privacy.obfuscator import Obfuscator
    from optin.training.classifier import Classifier
    from optin.training.obfuscator import train_obfuscator
    from optin.training.obfuscator_config import obfuscator_preset
    from optin.training.xvector_extractor import XVectorExtractor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--target", required=True, help="the permitted task's classifier")
    parser.add_argument("--xvector", required=True, help="x-vector extractor (original data)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--obfuscator", help="a trained causal obfuscator (default: train one)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    manifest = Manifest.read(args.manifest)
    out = Path(args.out)
    if args.obfuscator:
        model_dir = Path(args.obfuscator)
    else:
        model_dir = out / "obfuscator"
        config = obfuscator_preset("quick", obfuscator_arch="causal", obfuscator_residual=True,
                                   optimizer="adam", lr=1e-3, privacy_warmup=2,
                                   epochs=args.epochs)
        train_obfuscator(manifest, Path(args.target), model_dir, config, progress=False)
    obfuscator = Obfuscator.load(model_dir)
    target = Classifier.load(args.target)
    extractor = XVectorExtractor.load(args.xvector)
    test = manifest.split("test")
    cfg = obfuscator.features

    def predict(features: torch.Tensor) -> int:
        segs, lengths = segment(features, target.segments)
        with torch.no_grad():
            logits = target.model(segs, lengths)
        return int(vote(logits, torch.zeros(len(lengths), dtype=torch.long), 1)[0])

    conditions = ("features", "input", "griffin-lim")
    feats: dict[str, list[torch.Tensor]] = {c: [] for c in ("original", *conditions)}
    speakers = []
    for row in test.rows:
        wave = load_audio(test.audio_path(row), sample_rate=cfg.sample_rate,
                          normalize=cfg.volume, target_dbfs=cfg.target_dbfs)
        spec = obfuscator.spectrogram(wave)
        feats["original"].append(spec.features)
        feats["features"].append(obfuscator(spec).features)
        for phase in ("input", "griffin-lim"):
            audio = open_stream(obfuscator, chunk_ms=120, phase=phase).process(wave).audio
            feats[phase].append(obfuscator.spectrogram(np.asarray(audio)).features)
        speakers.append(row["speaker"])
    original = extractor.embed_batch(feats["original"])
    truth = [predict(f) for f in feats["original"]]
    rows = []
    for condition in conditions:
        protected = extractor.embed_batch(feats[condition])
        asv = asv_pairings(original, protected, speakers)
        agreement = float(np.mean([predict(f) == t for f, t in
                                   zip(feats[condition], truth, strict=True)]))
        rows.append({"condition": condition, "utterances": len(speakers),
                     "target_agreement": agreement,
                     "eer_original_protected": asv["original/protected"]["eer"],
                     "eer_protected_protected": asv["protected/protected"]["eer"],
                     "eer_original_original": asv["original/original"]["eer"]})
        print(json.dumps(rows[-1]), flush=True)
    (out / "phase_leak.json").write_text(json.dumps({"obfuscator": str(model_dir),
                                                     "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
