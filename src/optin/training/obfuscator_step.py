"""One step of the adversarial game and its validation pass.

:func:`adversarial_step`: K deobfuscator updates, then one obfuscator update on
lambda_t * L_t - lambda_p * L_p (+ the optional contraction term); :func:`validate`: the same
losses and the target's agreement on whole validation utterances. The loop around them is
:func:`optin.training.obfuscator.train_obfuscator`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optin.audio.features import FeatureConfig, features_to_wave
from optin.audio.segments import SegmentConfig, segment
from optin.models.deepspeech2 import vote
from optin.models.precision import autocast as mixed_precision
from optin.models.precision import step_dtype
from optin.privacy.adversary import Deobfuscator
from optin.privacy.contraction import ClassTemplates
from optin.privacy.losses import (
    agreement,
    frame_agreement,
    frame_target_loss,
    obfuscator_objective,
    target_loss,
)
from optin.privacy.obfuscator import ObfuscatorNetwork
from optin.training.data import (
    FeatureStore,
)
from optin.training.distributed import (
    DistEnv,
    all_sum,
)
from optin.training.obfuscator_config import ObfuscatorTrainConfig
from optin.training.permitted import PermittedTask, TaskSet
from optin.training.wave_data import PhaseStore, Utterance


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


@torch.no_grad()
def validate(obfuscator: ObfuscatorNetwork, deobfuscator: Deobfuscator, tasks: TaskSet,
             store: FeatureStore, env: DistEnv, device: torch.device,
             hard_targets: bool = False, templates: ClassTemplates | None = None,
             phases: PhaseStore | None = None) -> dict[str, float]:
    """Validation losses and agreement on whole utterances (this rank's share, summed).

    Per task: a DeepSpeech2 target is segmented as in training and voted per utterance; a
    frame-level target is scored over every frame of the utterance (``phases`` gives the audio
    and phase a waveform target needs). ``segment_agreement`` and ``utterance_agreement`` are
    the lowest over the tasks (a frame task counts its frame agreement for both);
    ``agreement_<task>`` each task's own.
    """
    obfuscator.eval()
    names = tasks.names
    # L_a, L_p, n utt, then per task: L_t sum, seg agree sum, n seg, utt agree, n utt, L_c sum
    sums = [0.0] * (3 + 6 * len(names))
    for i in range(env.rank, len(store), env.world_size):
        x = store.features(i).to(device)[None]  # (1, F, T)
        x_obf = obfuscator(x)
        sums[0] += float(deobfuscator.reconstruction_error(x, x_obf))
        sums[1] += float(deobfuscator.privacy_loss(x, x_obf))
        sums[2] += 1.0
        utt = phases.utterance(i) if phases is not None else None
        for k, task in enumerate(tasks.tasks):
            base = 3 + 6 * k
            if task.classifier is not None or task.model is not None:
                part = _utterance_task(task, x, x_obf, device, hard_targets, templates)
            else:
                part = _frame_task(tasks, task, x, x_obf, utt, device, hard_targets)
            for j, value in enumerate(part):
                sums[base + j] += value
    sums = all_sum(sums, env, device)
    obfuscator.train()
    n_utt = max(sums[2], 1.0)
    out = {"L_a": sums[0] / n_utt, "L_t": 0.0, "L_p": sums[1] / n_utt}
    seg, utt_agree, l_c = [], [], 0.0
    for k, task in enumerate(tasks.tasks):
        lt, sa, ns, ua, nu, lc = sums[3 + 6 * k: 9 + 6 * k]
        task_lt = lt / max(ns, 1.0)
        out["L_t"] += task.weight * task_lt
        seg.append(sa / max(ns, 1.0))
        utt_agree.append(ua / max(nu, 1.0))
        l_c += lc / max(ns, 1.0)
        if len(names) > 1 or task.level == "frame":
            out[f"agreement_{task.name}"] = utt_agree[-1]
    out.update(segment_agreement=min(seg), utterance_agreement=min(utt_agree), L_c=l_c)
    return out


def _utterance_task(task: PermittedTask, x: Tensor, x_obf: Tensor, device: torch.device,
                    hard: bool, templates: ClassTemplates | None) -> list[float]:
    """A DeepSpeech2 task on one utterance: [L_t sum, segment agreements, segments,
    utterance agreement, 1, L_c sum]."""
    segs_cfg = task.classifier.segments if task.classifier is not None else SegmentConfig()
    orig, lengths = segment(x[0], segs_cfg)
    obf, _ = segment(x_obf[0], segs_cfg)
    lengths = lengths.to(device)
    t_orig = task.scores(orig, lengths)
    t_obf = task.scores(obf, lengths)
    l_t = target_loss(t_obf, t_orig, hard=hard)
    index = torch.zeros(len(lengths), dtype=torch.long, device=device)
    same = vote(t_obf.cpu(), index.cpu(), 1) == vote(t_orig.cpu(), index.cpu(), 1)
    n = len(lengths)
    l_c = (templates.loss(obf, t_orig.argmax(dim=1)) if templates is not None
           else torch.zeros(()))
    return [float(l_t) * n, float(agreement(t_obf, t_orig)) * n, n, float(same[0]), 1.0,
            float(l_c) * n]


def _frame_task(tasks: TaskSet, task: PermittedTask, x: Tensor, x_obf: Tensor,
                utt: Utterance | None, device: torch.device, hard: bool) -> list[float]:
    """A pretrained task on one whole utterance: [L_t sum, agreeing frames, frames, the same
    two again, 0] (per-utterance pretrained tasks count as one frame)."""
    wave = wave_obf = None
    if task.input == "waveform":
        assert utt is not None, "a waveform target needs the phase store"
        stats = (torch.tensor([utt.mean], device=device), torch.tensor([utt.std], device=device))
        wave = utt.wave.to(device)
        wave_obf = features_to_wave(x_obf, *stats, utt.phase[None].to(device), tasks.features,
                                    length=wave.shape[0])[0]
    t_orig = tasks.utterance_scores(task, x[0], wave)
    t_obf = tasks.utterance_scores(task, x_obf[0], wave_obf)
    if t_orig.ndim == 1:
        t_orig, t_obf = t_orig[None], t_obf[None]
    frames = t_orig.shape[0]
    mask = torch.ones(1, frames, dtype=torch.bool, device=t_orig.device)
    l_t = float(frame_target_loss(t_obf[None], t_orig[None], mask, hard=hard)) * frames
    same = float(frame_agreement(t_obf[None], t_orig[None])) * frames
    return [l_t, same, frames, same, frames, 0.0]


def adversarial_step(x: Tensor, lengths: Tensor, obfuscator: nn.Module,
                     optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     adversary: Deobfuscator, target: nn.Module | TaskSet,
                     config: ObfuscatorTrainConfig, lambda_p: float | None = None,
                     templates: ClassTemplates | None = None, phase: Tensor | None = None,
                     stats: Tensor | None = None,
                     autocast: torch.dtype | None = None) -> dict[str, float]:
    """One training step: K deobfuscator updates, then one obfuscator update.

    Args:
        x: (B, F, L) crops; lengths: (B,) valid frames.
        obfuscator: F_sigma (or its DDP wrapper); target: the permitted tasks, or one model
            T (x, lengths) -> (B, K), frozen by ``freeze_target``.
        lambda_p: the privacy weight now (default ``config.lambda_p``); it also scales
            ``config.contraction * L_c`` when ``templates`` are given.
        phase, stats: (B, F, L) the input's phase and (B, 2) mean/std, for waveform targets.
        autocast: the mixed-precision dtype (default float16 when ``scaler`` is enabled, else
            float32; bfloat16 on CPUs with AMX: :mod:`optin.models.precision`).

    Returns:
        {"L_a", "L_t", "L_p", "L_c", "agreement", "objective"} of this step ("agreement": the
        lowest over the tasks).
    """
    tasks = target if isinstance(target, TaskSet) else TaskSet(
        [PermittedTask.of_model(target)], FeatureConfig())
    lambda_p = config.lambda_p if lambda_p is None else lambda_p
    dtype = step_dtype(autocast, scaler)
    with mixed_precision(x.device.type, dtype):
        x_obf = obfuscator(x)  # (B, F, L)
    l_a = sum(adversary.step(x, x_obf) for _ in range(config.deobfuscator_steps))
    l_a /= config.deobfuscator_steps
    with mixed_precision(x.device.type, dtype):
        l_t, agree, t_orig = tasks.losses(x, x_obf, lengths, phase, stats,
                                          hard=config.hard_targets)
        l_p = adversary.privacy_loss(x, x_obf)
        loss = obfuscator_objective(l_t, l_p, config.lambda_t, lambda_p)
        l_c = torch.zeros(())
        if templates is not None:
            if t_orig is None:
                raise ValueError("the contraction term L_c needs a per-utterance target")
            classes = t_orig.argmax(dim=1)
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
            "agreement": min(agree.values()), "objective": loss.item(),
            **({f"agreement_{name}": value for name, value in agree.items()}
               if len(agree) > 1 else {})}


TRAIN_METRICS = ("L_a", "L_t", "L_p", "L_c", "agreement")


def zero_sums() -> dict[str, float]:
    return dict.fromkeys((*TRAIN_METRICS, "n"), 0.0)
