"""Time one adversarial training step of the quick obfuscator preset on random input, and its
parts (the obfuscator's forward and backward, the deobfuscator's, T's), on this machine's CPU.

    python benchmarks/obfuscator_step.py [--batch 16] [--frames 100] [--repeats 6]
                                         [--precision float32|bfloat16]

It also prints the step's throughput in seconds of audio per second (a frame is 10 ms), its
FLOPs (``torch.utils.flop_counter``: convolutions and matrix products, forward and backward)
and the GFLOP/s achieved, against this machine's own peak: the best of a 2048 x 2048 matmul in
float32 (and in bfloat16), at the same threads.
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
    from torch.utils.flop_counter import FlopCounterMode

    from optin.deploy.bench import matmul_gflops
    from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
    from optin.models.deepspeech2 import DeepSpeech2Classifier, DeepSpeech2Config
    from optin.privacy.adversary import Deobfuscator
    from optin.training.obfuscator_config import obfuscator_preset
    from optin.training.obfuscator_step import adversarial_step, freeze_target

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                    help="autocast dtype of the step (bfloat16: what amp picks on AMX CPUs)")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.precision == "bfloat16" else None
    torch.manual_seed(0)
    cfg = obfuscator_preset("quick")
    gen = Generator(GeneratorConfig(base_width=cfg.obfuscator_width,
                                    residual_blocks=cfg.obfuscator_blocks))
    deobf = Generator(GeneratorConfig(base_width=cfg.deobfuscator_width,
                                      residual_blocks=cfg.deobfuscator_blocks))
    if args.channels_last:
        gen.to(memory_format=torch.channels_last)
        deobf.to(memory_format=torch.channels_last)
    target = freeze_target(DeepSpeech2Classifier(DeepSpeech2Config(n_classes=8, rnn_layers=2)))
    off = torch.amp.GradScaler("cuda", enabled=False)
    adversary = Deobfuscator(deobf, torch.optim.SGD(deobf.parameters(), lr=cfg.lr,
                                                    momentum=cfg.momentum),
                             cfg.privacy_layer, scaler=off, autocast=dtype)
    opt = torch.optim.SGD(gen.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    x = torch.randn(args.batch, 161, args.frames)
    lengths = torch.full((args.batch,), args.frames)
    rows = {
        "adversarial step": lambda: adversarial_step(x, lengths, gen, opt, off, adversary,
                                                     target, cfg, autocast=dtype),
        "obfuscator fwd+bwd": lambda: gen(x).sum().backward(),
        "deobfuscator fwd+bwd": lambda: deobf(x).sum().backward(),
        "obfuscator + T fwd+bwd": lambda: target(gen(x), lengths).sum().backward(),
    }
    print(f"{args.batch} crops x {args.frames} frames, {torch.get_num_threads()} threads, "
          f"{args.precision}")
    step_s = 0.0
    for name, fn in rows.items():
        seconds = timed(fn, args.repeats)
        step_s = step_s or seconds
        print(f"{name:<24} {seconds:.3f} s (median of {args.repeats})")
    with FlopCounterMode(display=False) as counter:
        rows["adversarial step"]()
    gflop = counter.get_total_flops() / 1e9
    audio_s = args.batch * args.frames / 100
    peaks = {name: matmul_gflops(size=2048, dtype=dt) for name, dt in
             (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    print(f"throughput: {audio_s / step_s:.1f} s of audio per s; {gflop:.1f} GFLOP per step, "
          f"{gflop / step_s:.0f} GFLOP/s achieved; matmul peak here: "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    with torch.no_grad():
        print(f"{'T forward':<24} {timed(lambda: target(x, lengths), args.repeats):.3f} s")


if __name__ == "__main__":
    main()
