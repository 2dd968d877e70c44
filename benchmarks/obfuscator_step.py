"""Time one adversarial training step of the quick obfuscator preset on random input, and its
parts (the obfuscator's forward and backward, the deobfuscator's, T's), on this machine's CPU.

    python benchmarks/obfuscator_step.py [--batch 16] [--frames 100] [--repeats 6]
"""

import argparse
import statistics
import time


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    import torch

    from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
    from optin.models.deepspeech2 import DeepSpeech2Classifier, DeepSpeech2Config
    from optin.privacy.adversary import Deobfuscator
    from optin.training.obfuscator_config import obfuscator_preset
    from optin.training.obfuscator_step import adversarial_step, freeze_target

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = obfuscator_preset("quick")
    gen = Generator(GeneratorConfig(base_width=cfg.obfuscator_width,
                                    residual_blocks=cfg.obfuscator_blocks))
    deobf = Generator(GeneratorConfig(base_width=cfg.deobfuscator_width,
                                      residual_blocks=cfg.deobfuscator_blocks))
    target = freeze_target(DeepSpeech2Classifier(DeepSpeech2Config(n_classes=8, rnn_layers=2)))
    off = torch.amp.GradScaler("cuda", enabled=False)
    adversary = Deobfuscator(deobf, torch.optim.SGD(deobf.parameters(), lr=cfg.lr,
                                                    momentum=cfg.momentum),
                             cfg.privacy_layer, scaler=off)
    opt = torch.optim.SGD(gen.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    x = torch.randn(args.batch, 161, args.frames)
    lengths = torch.full((args.batch,), args.frames)
    rows = {
        "adversarial step": lambda: adversarial_step(x, lengths, gen, opt, off, adversary,
                                                     target, cfg),
        "obfuscator fwd+bwd": lambda: gen(x).sum().backward(),
        "deobfuscator fwd+bwd": lambda: deobf(x).sum().backward(),
        "obfuscator + T fwd+bwd": lambda: target(gen(x), lengths).sum().backward(),
    }
    print(f"{args.batch} crops x {args.frames} frames, {torch.get_num_threads()} threads")
    for name, fn in rows.items():
        print(f"{name:<24} {timed(fn, args.repeats):.3f} s (median of {args.repeats})")
    with torch.no_grad():
        print(f"{'T forward':<24} {timed(lambda: target(x, lengths), args.repeats):.3f} s")


if __name__ == "__main__":
    main()
