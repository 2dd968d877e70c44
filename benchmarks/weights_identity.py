"""Train a tiny classifier, a tiny obfuscator and a tiny x-vector extractor with a fixed seed on one
thread and print the
SHA-256 of the weight files: run it with two trees' src on PYTHONPATH to check that a
refactoring left training bit-identical (OMP_NUM_THREADS=1 PYTHONPATH=TREE/src python
benchmarks/weights_identity.py MANIFEST OUT)."""
import hashlib
import sys
from pathlib import Path


def main() -> None:
    import torch
    torch.set_num_threads(1)
    from optin.training.classifier import preset_config, train_classifier
    from optin.training.obfuscator import train_obfuscator
    try:
        from optin.training.obfuscator_config import obfuscator_preset
    except ImportError:
        from optin.training.obfuscator import obfuscator_preset
    manifest, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = preset_config("speaker", "quick", epochs=2, seed=0, hidden_size=16, conv_channels=8)
    train_classifier(manifest, cfg, out / "T", progress=False)
    ocfg = obfuscator_preset("quick", epochs=1, seed=0, obfuscator_width=4, obfuscator_blocks=1,
                             deobfuscator_width=4, deobfuscator_blocks=1, batch_size=8)
    train_obfuscator(manifest, out / "T", out / "O", ocfg, progress=False)
    from optin.training.xvector import preset_config as xvector_preset
    from optin.training.xvector import train_xvector
    xcfg = xvector_preset("quick", epochs=2, seed=0, frame_channels=16, pool_channels=24,
                          embed_dim=16, segment_dim=16)
    train_xvector(manifest, xcfg, out / "X", progress=False)
    for f in (out / "T" / "model.safetensors", out / "O" / "obfuscator" / "model.safetensors",
              out / "X" / "model.safetensors"):
        print(f.relative_to(out), hashlib.sha256(f.read_bytes()).hexdigest())


if __name__ == "__main__":
    main()
