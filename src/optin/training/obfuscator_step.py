"""One step of the adversarial game and its validation pass.

:func:`adversarial_step`: K deobfuscator updates, then one obfuscator update on
lambda_t * L_t - lambda_p * L_p (+ the optional contraction term); :func:`validate`: the same
losses and the target's agreement on whole validation utterances. The loop around them is
:func:`optin.training.obfuscator.train_obfuscator`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optin.audio.segments import segment
from optin.models.deepspeech2 import vote
from optin.privacy.adversary import Deobfuscator
from optin.privacy.contraction import ClassTemplates
from optin.privacy.losses import agreement, obfuscator_objective, target_loss
from optin.privacy.obfuscator import ObfuscatorNetwork
from optin.training.classifier import Classifier
from optin.training.data import (
    FeatureStore,
)
from optin.training.distributed import (
    DistEnv,
    all_sum,
)
from optin.training.obfuscator_config import ObfuscatorTrainConfig


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
def validate(obfuscator: ObfuscatorNetwork, deobfuscator: Deobfuscator, target: Classifier,
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


def zero_sums() -> dict[str, float]:
    return dict.fromkeys((*TRAIN_METRICS, "n"), 0.0)
