"""Adversarial training of the opt-in obfuscator F_sigma against the deobfuscator F_mu.

Each step, on a batch of fixed-length crops X (B, F, L):
1. X~ = F_sigma(X);
2. the deobfuscator takes K steps on L_a = MSE(F_mu(X~.detach()), X);
3. the obfuscator takes one step on lambda_t * L_t - lambda_p * L_p, where
   L_t = H(T(X~), T(X)) with the target model T frozen (eval mode, parameters fixed) and
   L_p the latent distance in the deobfuscator's first N stages (deobfuscator frozen).

Both networks use SGD (lr 1e-2, momentum 0.9) as in the paper unless told otherwise. Every epoch
the run is validated on whole utterances of the manifest's ``valid`` split (obfuscated whole, then
segmented for T): L_a, L_t, L_p, and the target agreement T(X~) = T(X) per segment and per
utterance (after the vote). Selection rule: the latest epoch whose validation utterance agreement
is at least ``min_agreement``; if none reaches it, the epoch with the highest agreement (and the
run says so). The latest, not the one with the highest L_a: L_a and L_p are measured against a
deobfuscator that is itself still learning, so an early epoch looks private only because its
adversary is weak; later epochs have had the most privacy pressure. The run is
called converged when, over the last ``window`` epochs, validation L_a and L_p each move by less
than ``tolerance`` of their mean and the selected epoch meets the agreement target.

At the end the selected obfuscator is evaluated on the test split: T's accuracy on original and
obfuscated input, the agreement, and the deobfuscator's reconstruction error; they are printed and
stored in the obfuscator's ``config.json``. The same function runs under ``torchrun`` with
DistributedDataParallel (see ``optin.training.distributed``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from optin.audio.features import FeatureConfig
from optin.audio.segments import SegmentConfig, segment
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.errors import ConfigError
from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
from optin.models.deepspeech2 import vote
from optin.privacy.adversary import Deobfuscator
from optin.privacy.contraction import ClassTemplates
from optin.privacy.losses import agreement, obfuscator_objective, target_loss
from optin.privacy.obfuscator import DEOBFUSCATOR_KIND, OBFUSCATOR_KIND, Obfuscator
from optin.settings import Rule, above, at_least, between, check_fields
from optin.training.checkpoint import (
    load_checkpoint,
    load_module_state,
    load_state,
    read_config,
    save_checkpoint,
    save_state,
    write_config,
)
from optin.training.classifier import Classifier, evaluate_classifier
from optin.training.data import (
    BalancedSampler,
    FeatureStore,
    RandomCropDataset,
    collate_segments,
    segment_count,
)
from optin.training.distributed import (
    DistEnv,
    all_sum,
    barrier,
    parameter_checksums,
    setup,
    teardown,
)
from optin.training.presets import from_preset
from optin.training.records import check_run_settings, write_metrics
from optin.training.runs import SNAPSHOT_FIELDS, SNAPSHOT_SECONDS, SnapshotTimer

L_T_TOLERANCE = 0.05  # nats: largest spread of validation L_t over the window for "converged"


@dataclass
class ObfuscatorTrainConfig:
    """Everything that decides an obfuscator run."""

    epochs: int = 5
    batch_size: int = 16
    segment_length: int = 100  # frames per training crop (a multiple of 4 avoids padding)
    draws_per_epoch: int | None = None  # default: segments in the training split
    optimizer: Literal["sgd", "adam"] = "sgd"  # sgd (paper) or adam
    lr: float = 1e-2
    momentum: float = 0.9
    lambda_t: float = 1.0
    lambda_p: float = 1.0
    privacy_layer: int = 3
    deobfuscator_steps: int = 1
    hard_targets: bool = False
    obfuscator_width: int = 16
    obfuscator_blocks: int = 3
    obfuscator_residual: bool = False
    privacy_warmup: float = 0.0  # epochs over which lambda_p ramps linearly from 0
    contraction: float = 0.0  # weight of L_c (within-class contraction) relative to L_p
    template_momentum: float = 0.99
    deobfuscator_width: int = 64
    deobfuscator_blocks: int = 6
    grad_clip: float = 5.0
    min_agreement: float = 0.95
    window: int = 3
    tolerance: float = 0.1
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    amp: bool = True
    checkpoint_every: int = 50
    snapshot_seconds: float = SNAPSHOT_SECONDS

    RANGES: ClassVar[dict[str, Rule]] = {
        "epochs": at_least(1), "batch_size": at_least(1), "segment_length": at_least(1),
        "draws_per_epoch": at_least(1), "lr": above(0), "momentum": between(0, 1),
        "lambda_t": at_least(0), "lambda_p": at_least(0), "privacy_layer": at_least(1),
        "deobfuscator_steps": at_least(1), "obfuscator_width": at_least(1),
        "obfuscator_blocks": at_least(0), "deobfuscator_width": at_least(1),
        "deobfuscator_blocks": at_least(0), "grad_clip": above(0),
        "min_agreement": between(0, 1), "window": at_least(1), "tolerance": above(0),
        "seed": at_least(0), "workers": at_least(0), "checkpoint_every": at_least(1),
        "snapshot_seconds": at_least(0), "privacy_warmup": at_least(0),
        "contraction": at_least(0), "template_momentum": between(0, 1, high_open=True)}

    def __post_init__(self) -> None:
        check_fields(self)

    def run_settings(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("workers", "device", *SNAPSHOT_FIELDS):
            data.pop(key)
        return data


OBFUSCATOR_PRESETS: dict[str, dict[str, Any]] = {
    # minutes on a 2-core CPU for the built-in quick corpus: the paper's obfuscator, a
    # downsized deobfuscator
    "quick": {"epochs": 5, "batch_size": 16, "deobfuscator_width": 16,
              "deobfuscator_blocks": 3},
    # the paper's sizes: obfuscator B=16 with 3 residual blocks, deobfuscator B=64 with 6
    "paper": {"epochs": 60, "batch_size": 32, "deobfuscator_width": 64,
              "deobfuscator_blocks": 6},
}


def obfuscator_preset(preset: str = "quick", **overrides: Any) -> ObfuscatorTrainConfig:
    """A config from a named preset with explicit overrides (None values ignored)."""
    return from_preset(ObfuscatorTrainConfig, OBFUSCATOR_PRESETS, preset, overrides)


def freeze_target(model: nn.Module) -> nn.Module:
    """Put T in eval mode with no parameter gradients.

    Batch norm keeps its running statistics untouched. Recurrent layers are switched back to
    train mode because cuDNN computes RNN gradients (needed for X~) only in train mode; with
    dropout 0 (checked) their output is identical.
    """
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, nn.RNNBase):
            if module.dropout:
                raise ValueError("the target model's RNN uses dropout; it cannot be frozen "
                                 "exactly in train mode")
            module.train()
    return model


def _log(message: str, env: DistEnv) -> None:
    if env.is_main:
        print(message, file=sys.stderr, flush=True)


def _generator(width: int, blocks: int, n_freq: int, **options: Any) -> Generator:
    return Generator(GeneratorConfig(n_freq=n_freq, base_width=width, residual_blocks=blocks,
                                     **options))


def target_fingerprint(target_dir: Path) -> dict[str, Any]:
    """What identifies the target model: its weights hash, attribute and classes."""
    config = read_config(target_dir)
    return {"path": str(target_dir), "weights_sha256": config.get("weights_sha256"),
            "attribute": config.get("labels", {}).get("attribute"),
            "classes": config.get("labels", {}).get("classes")}


def privacy_ramp(config: ObfuscatorTrainConfig, epochs_done: float) -> float:
    """lambda_p after ``epochs_done`` epochs: a linear ramp from 0 over ``privacy_warmup``
    epochs, then ``config.lambda_p``."""
    if not config.privacy_warmup:
        return config.lambda_p
    return config.lambda_p * min(1.0, epochs_done / config.privacy_warmup)


@torch.no_grad()
def validate(obfuscator: Generator, deobfuscator: Deobfuscator, target: Classifier,
             store: FeatureStore, env: DistEnv, device: torch.device,
             hard_targets: bool = False,
             templates: ClassTemplates | None = None) -> dict[str, float]:
    """Validation losses and agreement on whole utterances (this rank's share, summed)."""
    obfuscator.eval()
    sums = [0.0] * 8  # L_a, L_t, L_p, seg agree, n seg, utt agree, n utt, L_c
    segs_cfg = target.segments
    for i in range(env.rank, len(store), env.world_size):
        x = store.features(i).to(device)[None]  # (1, F, T)
        x_obf = obfuscator(x)
        l_a = deobfuscator.reconstruction_error(x, x_obf)
        l_p = deobfuscator.privacy_loss(x, x_obf)
        orig, lengths = segment(x[0], segs_cfg)
        obf, _ = segment(x_obf[0], segs_cfg)
        lengths = lengths.to(device)
        t_orig = target.model(orig, lengths)
        t_obf = target.model(obf, lengths)
        l_t = target_loss(t_obf, t_orig, hard=hard_targets)
        index = torch.zeros(len(lengths), dtype=torch.long, device=device)
        same = vote(t_obf.cpu(), index.cpu(), 1) == vote(t_orig.cpu(), index.cpu(), 1)
        n = len(lengths)
        l_c = (templates.loss(obf, t_orig.argmax(dim=1)) if templates is not None
               else torch.zeros(()))
        sums = [a + b for a, b in zip(sums, [float(l_a), float(l_t) * n, float(l_p),
                                             float(agreement(t_obf, t_orig)) * n, n,
                                             float(same[0]), 1.0, float(l_c) * n], strict=True)]
    sums = all_sum(sums, env, device)
    obfuscator.train()
    n_utt = max(sums[6], 1.0)
    return {"L_a": sums[0] / n_utt, "L_t": sums[1] / max(sums[4], 1.0), "L_p": sums[2] / n_utt,
            "segment_agreement": sums[3] / max(sums[4], 1.0), "utterance_agreement":
            sums[5] / n_utt, "L_c": sums[7] / max(sums[4], 1.0)}


def adversarial_step(x: Tensor, lengths: Tensor, obfuscator: nn.Module,
                     optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     adversary: Deobfuscator, target: nn.Module,
                     config: ObfuscatorTrainConfig, lambda_p: float | None = None,
                     templates: ClassTemplates | None = None) -> dict[str, float]:
    """One training step: K deobfuscator updates, then one obfuscator update.

    Args:
        x: (B, F, L) crops; lengths: (B,) valid frames.
        obfuscator: F_sigma (or its DDP wrapper); target: T, frozen by ``freeze_target``.
        lambda_p: the privacy weight now (default ``config.lambda_p``); it also scales
            ``config.contraction * L_c`` when ``templates`` are given.

    Returns:
        {"L_a", "L_t", "L_p", "L_c", "agreement", "objective"} of this step.
    """
    lambda_p = config.lambda_p if lambda_p is None else lambda_p
    use_amp = scaler.is_enabled()
    device_type = x.device.type
    with torch.autocast(device_type, dtype=torch.float16, enabled=use_amp):
        x_obf = obfuscator(x)  # (B, F, L)
    l_a = sum(adversary.step(x, x_obf) for _ in range(config.deobfuscator_steps))
    l_a /= config.deobfuscator_steps
    with torch.autocast(device_type, dtype=torch.float16, enabled=use_amp):
        with torch.no_grad():
            t_orig = target(x, lengths)  # (B, K)
        t_obf = target(x_obf, lengths)
        l_t = target_loss(t_obf.float(), t_orig.float(), hard=config.hard_targets)
        l_p = adversary.privacy_loss(x, x_obf)
        loss = obfuscator_objective(l_t, l_p, config.lambda_t, lambda_p)
        classes = t_orig.argmax(dim=1)
        l_c = torch.zeros(())
        if templates is not None:
            l_c = templates.loss(x_obf, classes)
            loss = loss + lambda_p * config.contraction * l_c
    if not torch.isfinite(loss.detach()):
        raise FloatingPointError(f"obfuscator objective became {float(loss)}; lower --lr")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    if templates is not None:
        templates.update(x_obf, classes)
    return {"L_a": float(l_a), "L_t": l_t.item(), "L_p": l_p.item(), "L_c": float(l_c.detach()),
            "agreement": float(agreement(t_obf.detach(), t_orig)), "objective": loss.item()}


TRAIN_METRICS = ("L_a", "L_t", "L_p", "L_c", "agreement")


def _zero_sums() -> dict[str, float]:
    return dict.fromkeys((*TRAIN_METRICS, "n"), 0.0)


def _select(history: list[dict[str, Any]], min_agreement: float) -> tuple[int, bool]:
    """(index of the selected epoch, whether it meets the agreement target)."""
    ok = [i for i, h in enumerate(history) if h["valid_utterance_agreement"] >= min_agreement]
    if ok:
        return ok[-1], True
    return max(range(len(history)), key=lambda i: history[i]["valid_utterance_agreement"]), False


def convergence(history: list[dict[str, Any]], window: int, tolerance: float,
                agreement_ok: bool) -> dict[str, Any]:
    """Did validation L_a, L_p (relative spread) and L_t (absolute spread) settle over the
    last ``window`` epochs, with the agreement target met?"""
    if len(history) < window:
        return {"converged": False, "reason": f"fewer than {window} epochs"}
    tail = history[-window:]
    spreads = {}
    for key in ("valid_L_a", "valid_L_p"):
        values = [h[key] for h in tail]
        mean = sum(values) / len(values)
        spreads[key] = (max(values) - min(values)) / max(abs(mean), 1e-12)
    target_values = [h["valid_L_t"] for h in tail]
    spreads["valid_L_t"] = max(target_values) - min(target_values)  # absolute, in nats
    settled = (spreads["valid_L_a"] < tolerance and spreads["valid_L_p"] < tolerance
               and spreads["valid_L_t"] < L_T_TOLERANCE)
    reason = (f"spread over the last {window} epochs: relative valid_L_a "
              f"{spreads['valid_L_a']:.3f}, valid_L_p {spreads['valid_L_p']:.3f} (tolerance "
              f"{tolerance}), absolute valid_L_t {spreads['valid_L_t']:.3f} (tolerance "
              f"{L_T_TOLERANCE}); agreement target " + ("met" if agreement_ok else "NOT met"))
    return {"converged": settled and agreement_ok, "reason": reason, "spread": spreads}


def train_obfuscator(
    manifest: Manifest | str | os.PathLike,
    target_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: ObfuscatorTrainConfig | None = None,
    progress: bool = True,
    cache_root: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train (resume, or return the finished) obfuscator run in ``out_dir``.

    Writes ``out_dir/obfuscator/`` and ``out_dir/deobfuscator/`` checkpoints (selected epoch),
    ``metrics.csv``, ``run.json`` and ``train_state/``. Returns the obfuscator's config.json.
    """
    config = config or ObfuscatorTrainConfig()
    out_dir = Path(out_dir)
    target_dir = Path(target_dir)
    env, device = setup(config.device)
    try:
        return _train(manifest, target_dir, out_dir, config, progress and env.is_main,
                      cache_root, env, device)
    finally:
        teardown(env)


def _train(manifest: Manifest | str | os.PathLike, target_dir: Path, out_dir: Path,
           config: ObfuscatorTrainConfig, progress: bool, cache_root: str | os.PathLike | None,
           env: DistEnv, device: torch.device) -> dict[str, Any]:
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    target = Classifier.load(target_dir, device=device)
    freeze_target(target.model)
    features: FeatureConfig = target.features
    fingerprint = target_fingerprint(target_dir)
    check_run_settings(out_dir, {"config": config.run_settings(),
                                 "manifest": manifest.fingerprint(),
                                 "target": fingerprint}, write=env.is_main)
    barrier(env)
    state_dir = out_dir / "train_state"
    state = load_state(state_dir)
    if state is not None and state.get("progress", {}).get("finished"):
        _log(f"{out_dir}: already trained; nothing to do", env)
        return json.loads((out_dir / "obfuscator" / "config.json").read_text())

    torch.manual_seed(config.seed)
    use_amp = config.amp and device.type == "cuda"
    train = manifest.split("train")
    valid = manifest.split("valid")
    cache = (FeatureCache(cache_root, features) if cache_root is not None
             else FeatureCache.for_manifest(manifest, features))
    if env.is_main:  # fill the cache once, then every rank reads it
        FeatureStore(manifest.filter(lambda r: r["split"] in ("train", "valid")), cache,
                     progress=progress, preload=False)
    barrier(env)
    train_store = FeatureStore(train, cache, progress=False)
    valid_store = FeatureStore(valid, cache, progress=False)

    obf_net = _generator(config.obfuscator_width, config.obfuscator_blocks, features.n_freq,
                         residual=config.obfuscator_residual).to(device)
    deobf_net = _generator(config.deobfuscator_width, config.deobfuscator_blocks,
                           features.n_freq).to(device)
    if config.privacy_layer > deobf_net.num_stages:
        raise ConfigError(f"privacy_layer {config.privacy_layer} exceeds the deobfuscator's "
                         f"{deobf_net.num_stages} stages")

    def make_optimizer(params) -> torch.optim.Optimizer:
        if config.optimizer == "sgd":
            return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
        return torch.optim.Adam(params, lr=config.lr)

    obf_train: nn.Module = obf_net
    deobf_train: nn.Module = deobf_net
    if env.enabled:
        ids = [device.index] if device.type == "cuda" else None
        obf_train = DistributedDataParallel(obf_net, device_ids=ids)
        deobf_train = DistributedDataParallel(deobf_net, device_ids=ids)
    obf_opt = make_optimizer(obf_net.parameters())
    deobf_opt = make_optimizer(deobf_net.parameters())
    obf_scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    deobf_scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    adversary = Deobfuscator(deobf_net, deobf_opt, config.privacy_layer, trainable=deobf_train,
                             grad_clip=config.grad_clip, scaler=deobf_scaler)

    segments = SegmentConfig(config.segment_length, config.segment_length)
    draws = config.draws_per_epoch or segment_count(train_store, segments)
    zeros = [0] * len(train_store)
    sampler = BalancedSampler(zeros, draws, config.seed, balanced=False, rank=env.rank,
                              world_size=env.world_size)
    dataset = RandomCropDataset(train_store, zeros, segments)
    steps = math.ceil((draws // env.world_size) / config.batch_size)

    templates = (ClassTemplates(len(target.encoder), features.n_freq, config.template_momentum,
                                device) if config.contraction else None)
    progress_state: dict[str, Any] = {"epoch": 0, "step": 0, "sums": _zero_sums(),
                                      "seconds": 0.0, "history": [], "finished": False}
    if state is not None:
        load_module_state(obf_net, state["obfuscator"], state_dir)
        load_module_state(deobf_net, state["deobfuscator"], state_dir)
        obf_opt.load_state_dict(state["obfuscator_optimizer"])
        deobf_opt.load_state_dict(state["deobfuscator_optimizer"])
        if use_amp:
            obf_scaler.load_state_dict(state["obfuscator_scaler"])
            deobf_scaler.load_state_dict(state["deobfuscator_scaler"])
        torch.set_rng_state(state["rng"])
        if templates is not None:
            templates.load_state_dict(state["templates"])
        progress_state = state["progress"]
        _log(f"{out_dir}: resuming at epoch {progress_state['epoch'] + 1}, step "
             f"{progress_state['step']}/{steps}", env)

    timer = SnapshotTimer(config.checkpoint_every, config.snapshot_seconds)

    def snapshot() -> None:
        if env.is_main:
            save_state(state_dir, {
                "obfuscator": obf_net.state_dict(), "deobfuscator": deobf_net.state_dict(),
                "obfuscator_optimizer": obf_opt.state_dict(),
                "deobfuscator_optimizer": deobf_opt.state_dict(),
                "obfuscator_scaler": obf_scaler.state_dict() if use_amp else {},
                "deobfuscator_scaler": deobf_scaler.state_dict() if use_amp else {},
                "rng": torch.get_rng_state(), "progress": progress_state,
                **({"templates": templates.state_dict()} if templates is not None else {}),
            })
        barrier(env)
        timer.saved()

    _log(f"training the obfuscator ({obf_net.num_parameters():,} parameters) against a "
         f"deobfuscator ({deobf_net.num_parameters():,}) for the target "
         f"'{fingerprint['attribute']}' ({len(train_store)} train / {len(valid_store)} valid "
         f"utterances, {env.world_size} process(es), {device})", env)
    provenance = {"manifest": str(manifest.source) if manifest.source else None,
                  "manifest_fingerprint": manifest.fingerprint(), "seed": config.seed,
                  "train_config": config.run_settings()}
    while progress_state["epoch"] < config.epochs:
        epoch = progress_state["epoch"]
        sampler.set_epoch(epoch, skip=progress_state["step"] * config.batch_size)
        loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                            collate_fn=collate_segments, num_workers=config.workers)
        obf_train.train()
        bar = tqdm(loader, total=steps, initial=progress_state["step"], unit="batch",
                   desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        tick = time.perf_counter()
        for x, lengths, _ in bar:
            done = epoch + progress_state["step"] / steps  # epochs of training so far
            metrics = adversarial_step(x.to(device), lengths.to(device), obf_train, obf_opt,
                                       obf_scaler, adversary, target.model, config,
                                       lambda_p=privacy_ramp(config, done),
                                       templates=templates)
            n = len(x)
            sums = progress_state["sums"]
            for key in TRAIN_METRICS:
                sums[key] += metrics[key] * n
            sums["n"] += n
            progress_state["step"] += 1
            bar.set_postfix({k: f"{sums[k] / sums['n']:.3f}" for k in TRAIN_METRICS})
            # every rank must agree (a snapshot waits at a barrier): any rank's clock decides
            if all_sum([float(timer.due(progress_state["step"], steps))], env, device)[0]:
                now = time.perf_counter()
                progress_state["seconds"] += now - tick
                tick = now
                snapshot()
        bar.close()
        progress_state["seconds"] += time.perf_counter() - tick

        keys = [*TRAIN_METRICS, "n"]
        sums = dict(zip(keys, all_sum([progress_state["sums"][k] for k in keys], env, device),
                        strict=True))
        val = validate(obf_net, adversary, target, valid_store, env, device, config.hard_targets,
                       templates=templates)
        seen = max(sums["n"], 1.0)
        row = {"epoch": epoch + 1, **{f"train_{k}": sums[k] / seen for k in TRAIN_METRICS},
               **{f"valid_{k}": v for k, v in val.items()},
               "seconds": progress_state["seconds"], "lambda_p": privacy_ramp(config, epoch + 1),
               "train_segments_per_s": sums["n"] / max(progress_state["seconds"], 1e-9)}
        progress_state["history"].append(row)
        if env.is_main:
            write_metrics(out_dir / "metrics.csv", progress_state["history"])
        _log(f"epoch {epoch + 1}: train L_a {row['train_L_a']:.4f} L_t {row['train_L_t']:.4f} "
             f"L_p {row['train_L_p']:.4f} L_c {row['train_L_c']:.4f} agree "
             f"{row['train_agreement']:.3f} | valid L_a "
             f"{val['L_a']:.4f} L_t {val['L_t']:.4f} L_p {val['L_p']:.4f} agree "
             f"{val['segment_agreement']:.3f} (utt {val['utterance_agreement']:.3f}) | "
             f"{row['train_segments_per_s']:.1f} seg/s", env)
        chosen, _ = _select(progress_state["history"], config.min_agreement)
        if chosen == len(progress_state["history"]) - 1 and env.is_main:
            base = {"features": features.to_dict(), "target": fingerprint,
                    "privacy": {"lambda_t": config.lambda_t, "lambda_p": config.lambda_p,
                                "privacy_layer": config.privacy_layer,
                                "deobfuscator_steps": config.deobfuscator_steps,
                                "hard_targets": config.hard_targets},
                    "provenance": provenance, "metrics": {"valid": val, "epoch": epoch + 1}}
            save_checkpoint(out_dir / "obfuscator", obf_net.state_dict(), {
                "kind": OBFUSCATOR_KIND, "architecture": obf_net.config.to_dict(),
                "parameters": obf_net.num_parameters(), **base})
            save_checkpoint(out_dir / "deobfuscator", deobf_net.state_dict(), {
                "kind": DEOBFUSCATOR_KIND, "architecture": deobf_net.config.to_dict(),
                "parameters": deobf_net.num_parameters(), **base})
        progress_state.update(epoch=epoch + 1, step=0, sums=_zero_sums(), seconds=0.0)
        snapshot()

    history = progress_state["history"]
    chosen, agreement_ok = _select(history, config.min_agreement)
    checksums = parameter_checksums(obf_net, env)
    if len(set(checksums)) != 1:
        raise RuntimeError(f"ranks disagree on the obfuscator's weights: {checksums}")
    summary = {
        "epochs_run": len(history),
        "world_size": env.world_size,
        "rank_checksums": checksums,
        "selected_epoch": history[chosen]["epoch"],
        "selection": (f"latest epoch with validation utterance agreement >= "
                      f"{config.min_agreement}"
                      + ("" if agreement_ok else "; NO epoch reached it, so the epoch with the "
                                                 "highest agreement was kept")),
        **convergence(history, config.window, config.tolerance, agreement_ok),
    }
    final: dict[str, Any] = {}
    if env.is_main:
        evaluation = honest_evaluation(manifest, target_dir, out_dir, cache_root, progress,
                                       device)
        for part in ("obfuscator", "deobfuscator"):
            conf = read_config(out_dir / part)
            conf["training"] = summary
            conf["evaluation"] = evaluation
            write_config(out_dir / part, conf)
        final = json.loads((out_dir / "obfuscator" / "config.json").read_text())
        _log(format_evaluation(evaluation, summary), env)
    progress_state["finished"] = True
    snapshot()
    return final


def honest_evaluation(manifest: Manifest, target_dir: Path, out_dir: Path,
                      cache_root: str | os.PathLike | None, progress: bool,
                      device: torch.device) -> dict[str, Any]:
    """T on original and obfuscated test data, agreement, and the deobfuscator's error."""
    obfuscator = Obfuscator.load(out_dir, device=device)
    target = Classifier.load(target_dir, features=obfuscator.features, device=device)
    original = evaluate_classifier(target_dir, manifest, "test", progress=False,
                                   cache_root=cache_root, classifier=target,
                                   return_predictions=True)
    obfuscated = evaluate_classifier(target_dir, manifest, "test", progress=False,
                                     cache_root=cache_root, classifier=target,
                                     transform=obfuscator.obfuscate_features,
                                     return_predictions=True)
    config, state = load_checkpoint(out_dir / "deobfuscator", kind=DEOBFUSCATOR_KIND)
    deobf = Generator(GeneratorConfig.from_dict(config["architecture"]))
    load_module_state(deobf, state, out_dir / "deobfuscator")
    deobf.to(device).eval()
    cache = (FeatureCache(cache_root, obfuscator.features) if cache_root is not None
             else FeatureCache.for_manifest(manifest, obfuscator.features))
    store = FeatureStore(manifest.split("test"), cache, progress=False)
    total, frames = 0.0, 0
    with torch.no_grad():
        for i in range(len(store)):
            x = store.features(i).to(device)[None]
            recon = deobf(obfuscator.obfuscate_features(x))
            total += float(((recon - x) ** 2).sum())
            frames += x.numel()
    pairs = list(zip(original["predictions"], obfuscated["predictions"], strict=True))
    agree = sum(a == b for a, b in pairs) / max(len(pairs), 1)
    keep = ("utterance_accuracy", "segment_accuracy", "balanced_accuracy", "chance",
            "utterances")
    return {
        "split": "test",
        "target_original": {k: original[k] for k in keep},
        "target_obfuscated": {k: obfuscated[k] for k in keep},
        "agreement": agree,
        "deobfuscator_mse": total / max(frames, 1),
    }


def format_evaluation(evaluation: dict[str, Any], summary: dict[str, Any]) -> str:
    o, x = evaluation["target_original"], evaluation["target_obfuscated"]
    return (f"selected epoch {summary['selected_epoch']} ({summary['selection']}); converged: "
            f"{summary['converged']} ({summary['reason']})\n"
            f"test: target accuracy original {o['utterance_accuracy']:.3f}, obfuscated "
            f"{x['utterance_accuracy']:.3f} (chance {o['chance']:.3f}); agreement "
            f"T(X~)=T(X) {evaluation['agreement']:.3f}; deobfuscator reconstruction MSE "
            f"{evaluation['deobfuscator_mse']:.4f}")

