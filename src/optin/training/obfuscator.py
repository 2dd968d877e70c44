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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from optin.audio.features import FeatureConfig
from optin.audio.segments import SegmentConfig
from optin.checkpoint import (
    load_model,
    load_module_state,
    load_state,
    read_config,
    save_checkpoint,
    save_state,
    write_config,
)
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.errors import ConfigError
from optin.models.causal_obfuscator import CausalObfuscator, CausalObfuscatorConfig
from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
from optin.models.precision import autocast_dtype, precision_name
from optin.privacy.adversary import Deobfuscator
from optin.privacy.contraction import ClassTemplates
from optin.privacy.obfuscator import (
    DEOBFUSCATOR_KIND,
    Obfuscator,
    ObfuscatorNetwork,
    obfuscator_kind,
)
from optin.training.classifier import evaluate_classifier
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
from optin.training.obfuscator_config import ObfuscatorTrainConfig, privacy_ramp
from optin.training.obfuscator_step import (
    TRAIN_METRICS,
    adversarial_step,
    freeze_target,
    validate,
    zero_sums,
)
from optin.training.permitted import (
    PermittedTask,
    TargetChoice,
    TaskSet,
    compare_answers,
    load_tasks,
    target_choices,
)
from optin.training.records import check_run_settings, write_metrics
from optin.training.runs import SnapshotTimer
from optin.training.wave_data import (
    PhasedCropDataset,
    PhaseStore,
    collate_phased,
    heard_waves,
)

L_T_TOLERANCE = 0.05  # nats: largest spread of validation L_t over the window for "converged"


def _log(message: str, env: DistEnv) -> None:
    if env.is_main:
        print(message, file=sys.stderr, flush=True)


def _generator(width: int, blocks: int, n_freq: int, **options: Any) -> Generator:
    return Generator(GeneratorConfig(n_freq=n_freq, base_width=width, residual_blocks=blocks,
                                     **options))


def obfuscator_network(config: ObfuscatorTrainConfig, n_freq: int) -> ObfuscatorNetwork:
    """The untrained obfuscator a run starts from: the paper's generator or the causal one."""
    if config.obfuscator_arch == "causal":
        return CausalObfuscator(CausalObfuscatorConfig(
            n_freq=n_freq, hidden=config.causal_hidden, blocks=config.causal_blocks,
            lookahead=config.lookahead, residual=config.obfuscator_residual))
    return _generator(config.obfuscator_width, config.obfuscator_blocks, n_freq,
                      residual=config.obfuscator_residual)


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
    target_dir: str | os.PathLike | TargetChoice | Sequence[Any],
    out_dir: str | os.PathLike,
    config: ObfuscatorTrainConfig | None = None,
    progress: bool = True,
    cache_root: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train (resume, or return the finished) obfuscator run in ``out_dir``.

    ``target_dir``: the permitted task(s): a DeepSpeech2 target folder, a pretrained model
    (TorchScript or ONNX file, or ``silero-vad``) or a :class:`TargetChoice`, or a list of
    them (L_t is their weighted sum; :mod:`optin.training.permitted`).

    Writes ``out_dir/obfuscator/`` and ``out_dir/deobfuscator/`` checkpoints (selected epoch),
    ``metrics.csv``, ``run.json`` and ``train_state/``. Returns the obfuscator's config.json.
    """
    config = config or ObfuscatorTrainConfig()
    out_dir = Path(out_dir)
    target_dir = target_choices(target_dir)
    env, device = setup(config.device)
    try:
        return _train(manifest, target_dir, out_dir, config, progress and env.is_main,
                      cache_root, env, device)
    finally:
        teardown(env)


def _train(manifest: Manifest | str | os.PathLike, choices: list[TargetChoice], out_dir: Path,
           config: ObfuscatorTrainConfig, progress: bool, cache_root: str | os.PathLike | None,
           env: DistEnv, device: torch.device) -> dict[str, Any]:
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    tasks = load_tasks(choices, device=device)
    for task in tasks.tasks:
        if task.classifier is not None:
            freeze_target(task.classifier.model)
    features: FeatureConfig = tasks.features
    fingerprints = tasks.fingerprints()
    fingerprint = fingerprints[0] if len(fingerprints) == 1 else fingerprints
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
    mixed = autocast_dtype(device, config.amp)
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
    train_phases = PhaseStore(train_store, features) if tasks.needs_phase else None
    valid_phases = PhaseStore(valid_store, features) if tasks.needs_phase else None

    obf_net = obfuscator_network(config, features.n_freq).to(device)
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
                             grad_clip=config.grad_clip, scaler=deobf_scaler, autocast=mixed)

    segments = SegmentConfig(config.segment_length, config.segment_length)
    draws = config.draws_per_epoch or segment_count(train_store, segments)
    zeros = [0] * len(train_store)
    sampler = BalancedSampler(zeros, draws, config.seed, balanced=False, rank=env.rank,
                              world_size=env.world_size)
    dataset = (PhasedCropDataset(train_store, train_phases, zeros, segments)
               if train_phases is not None else RandomCropDataset(train_store, zeros, segments))
    collate = collate_phased if train_phases is not None else collate_segments
    steps = math.ceil((draws // env.world_size) / config.batch_size)

    templates = None
    if config.contraction:
        first = tasks.utterance_task
        if first is None or first.classifier is None:
            raise ConfigError("--contraction needs a DeepSpeech2 target (its classes)")
        templates = ClassTemplates(len(first.classifier.encoder), features.n_freq,
                                   config.template_momentum, device)
    progress_state: dict[str, Any] = {"epoch": 0, "step": 0, "sums": zero_sums(),
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
         f"{tasks.describe()} ({len(train_store)} train / {len(valid_store)} valid "
         f"utterances, {env.world_size} process(es), {device}, {precision_name(mixed)})", env)
    provenance = {"manifest": str(manifest.source) if manifest.source else None,
                  "manifest_fingerprint": manifest.fingerprint(), "seed": config.seed,
                  "train_config": config.run_settings()}
    while progress_state["epoch"] < config.epochs:
        epoch = progress_state["epoch"]
        sampler.set_epoch(epoch, skip=progress_state["step"] * config.batch_size)
        loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                            collate_fn=collate, num_workers=config.workers)
        obf_train.train()
        bar = tqdm(loader, total=steps, initial=progress_state["step"], unit="batch",
                   desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        tick = time.perf_counter()
        for x, lengths, _, *wave in bar:
            done = epoch + progress_state["step"] / steps  # epochs of training so far
            metrics = adversarial_step(x.to(device), lengths.to(device), obf_train, obf_opt,
                                       obf_scaler, adversary, tasks, config,
                                       lambda_p=privacy_ramp(config, done),
                                       templates=templates, autocast=mixed,
                                       **({"phase": wave[0].to(device),
                                           "stats": wave[1].to(device)} if wave else {}))
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
        val = validate(obf_net, adversary, tasks, valid_store, env, device, config.hard_targets,
                       templates=templates, phases=valid_phases)
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
            base = {"features": features.to_dict(), "target": fingerprints[0],
                    **({"targets": fingerprints} if len(fingerprints) > 1
                       or tasks.tasks[0].pretrained is not None else {}),
                    "privacy": {"lambda_t": config.lambda_t, "lambda_p": config.lambda_p,
                                "privacy_layer": config.privacy_layer,
                                "deobfuscator_steps": config.deobfuscator_steps,
                                "hard_targets": config.hard_targets},
                    "provenance": provenance, "metrics": {"valid": val, "epoch": epoch + 1}}
            save_checkpoint(out_dir / "obfuscator", obf_net.state_dict(), {
                "kind": obfuscator_kind(obf_net), "architecture": obf_net.config.to_dict(),
                "parameters": obf_net.num_parameters(), **base})
            save_checkpoint(out_dir / "deobfuscator", deobf_net.state_dict(), {
                "kind": DEOBFUSCATOR_KIND, "architecture": deobf_net.config.to_dict(),
                "parameters": deobf_net.num_parameters(), **base})
        progress_state.update(epoch=epoch + 1, step=0, sums=zero_sums(), seconds=0.0)
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
        "precision": precision_name(mixed),
        "selected_epoch": history[chosen]["epoch"],
        "selection": (f"latest epoch with validation utterance agreement >= "
                      f"{config.min_agreement}"
                      + ("" if agreement_ok else "; NO epoch reached it, so the epoch with the "
                                                 "highest agreement was kept")),
        **convergence(history, config.window, config.tolerance, agreement_ok),
    }
    final: dict[str, Any] = {}
    if env.is_main:
        evaluation = honest_evaluation(manifest, tasks, out_dir, cache_root, progress,
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


def honest_evaluation(manifest: Manifest, tasks: TaskSet, out_dir: Path,
                      cache_root: str | os.PathLike | None, progress: bool,
                      device: torch.device) -> dict[str, Any]:
    """Each permitted task on original and obfuscated test data, and the deobfuscator's error.

    A DeepSpeech2 task: its accuracy on both and the utterance agreement (the first one's also
    at the top level, as before several tasks). A pretrained task: agreement and F1 of its
    answers on the obfuscated audio against its answers on the original, with the input's
    phase (as in training) and with Griffin-Lim (what ``optin obfuscate`` writes). The top-level
    ``agreement`` is the lowest over the tasks.
    """
    obfuscator = Obfuscator.load(out_dir, device=device)
    cache = (FeatureCache(cache_root, obfuscator.features) if cache_root is not None
             else FeatureCache.for_manifest(manifest, obfuscator.features))
    store = FeatureStore(manifest.split("test"), cache, progress=False)
    result: dict[str, Any] = {"split": "test"}
    per_task: dict[str, Any] = {}
    for task in tasks.tasks:
        if task.classifier is not None:
            per_task[task.name] = _classifier_evaluation(task, manifest, obfuscator, cache_root)
            if "target_original" not in result:
                result.update(per_task[task.name])
        else:
            per_task[task.name] = _pretrained_evaluation(tasks, task, store, obfuscator,
                                                         progress)
    if len(per_task) > 1 or "target_original" not in result:
        result["tasks"] = per_task
    result["agreement"] = min(t["agreement"] for t in per_task.values())
    deobf = load_model(out_dir / "deobfuscator", DEOBFUSCATOR_KIND, device=device).module
    total, frames = 0.0, 0
    with torch.no_grad():
        for i in range(len(store)):
            x = store.features(i).to(device)[None]
            recon = deobf(obfuscator.obfuscate_features(x))
            total += float(((recon - x) ** 2).sum())
            frames += x.numel()
    result["deobfuscator_mse"] = total / max(frames, 1)
    return result


def _classifier_evaluation(task: PermittedTask, manifest: Manifest, obfuscator: Obfuscator,
                           cache_root: str | os.PathLike | None) -> dict[str, Any]:
    target, folder = task.classifier, task.fingerprint["path"]
    original = evaluate_classifier(folder, manifest, "test", progress=False,
                                   cache_root=cache_root, classifier=target,
                                   return_predictions=True)
    obfuscated = evaluate_classifier(folder, manifest, "test", progress=False,
                                     cache_root=cache_root, classifier=target,
                                     transform=obfuscator.obfuscate_features,
                                     return_predictions=True)
    pairs = list(zip(original["predictions"], obfuscated["predictions"], strict=True))
    keep = ("utterance_accuracy", "segment_accuracy", "balanced_accuracy", "chance",
            "utterances")
    return {"target_original": {k: original[k] for k in keep},
            "target_obfuscated": {k: obfuscated[k] for k in keep},
            "agreement": sum(a == b for a, b in pairs) / max(len(pairs), 1)}


def _pretrained_evaluation(tasks: TaskSet, task: PermittedTask, store: FeatureStore,
                           obfuscator: Obfuscator, progress: bool,
                           griffin_lim_iters: int = 32) -> dict[str, Any]:
    phases = PhaseStore(store, tasks.features)
    device = obfuscator.device
    input_phase, griffin = [], []
    for i in tqdm(range(len(store)), desc=f"evaluating '{task.name}'", unit="utt",
                  disable=not progress, leave=False):
        feats = store.features(i).to(device)
        obf = obfuscator.obfuscate_features(feats[None])
        utt = phases.utterance(i)
        if task.input == "waveform":
            heard = heard_waves(obf[0], utt, tasks.features, griffin_lim_iters)
            original = tasks.utterance_scores(task, feats, utt.wave.to(device))
            input_phase.append((original, tasks.utterance_scores(task, obf[0],
                                                                 heard["input_phase"])))
            griffin.append((original, tasks.utterance_scores(task, obf[0],
                                                             heard["griffin_lim"])))
        else:
            original = tasks.utterance_scores(task, feats, None)
            input_phase.append((original, tasks.utterance_scores(task, obf[0], None)))
    result = compare_answers(input_phase)
    if griffin:
        result.update({f"{k}_griffin_lim": v for k, v in compare_answers(griffin).items()
                       if k in ("agreement", "f1")})
    return {**result, "level": task.level, "utterances": len(store)}


def format_evaluation(evaluation: dict[str, Any], summary: dict[str, Any]) -> str:
    lines = [f"selected epoch {summary['selected_epoch']} ({summary['selection']}); converged: "
             f"{summary['converged']} ({summary['reason']})"]
    if "target_original" in evaluation:
        o, x = evaluation["target_original"], evaluation["target_obfuscated"]
        first = next((t for t in evaluation.get("tasks", {}).values()
                      if "target_original" in t), evaluation)  # its own, not the lowest
        lines.append(f"test: target accuracy original {o['utterance_accuracy']:.3f}, obfuscated "
                     f"{x['utterance_accuracy']:.3f} (chance {o['chance']:.3f}); agreement "
                     f"T(X~)=T(X) {first['agreement']:.3f}; deobfuscator reconstruction "
                     f"MSE {evaluation['deobfuscator_mse']:.4f}")
    for name, task in evaluation.get("tasks", {}).items():
        if "f1" in task:
            extra = (f"; with Griffin-Lim {task['agreement_griffin_lim']:.3f} (F1 "
                     f"{task['f1_griffin_lim']:.3f})" if "agreement_griffin_lim" in task else "")
            lines.append(f"test: '{name}' agreement with its answers on the original "
                         f"{task['agreement']:.3f} over {task['frames']} {task['level']}s (F1 "
                         f"{task['f1']:.3f}), input phase{extra}")
    if "target_original" not in evaluation:
        lines.append(f"test: deobfuscator reconstruction MSE "
                     f"{evaluation['deobfuscator_mse']:.4f}")
    return "\n".join(lines)
