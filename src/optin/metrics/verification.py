"""Speaker verification with embeddings: trial lists, cosine scoring, EER, minDCF, ASV pairings.

A *trial* pairs an enrollment utterance with a test utterance; it is a *target* trial when both
come from the same speaker. Scores are cosine similarities of the two embeddings; a trial is
accepted when its score is >= the threshold.

* :func:`eer`: the equal error rate on the ROC (false acceptance rate FAR against false
  rejection rate FRR over all thresholds), linearly interpolated between the two ROC points
  where FRR - FAR changes sign, so it is exact on the piecewise-linear ROC.
* :func:`min_dcf`: ``min_t c_miss p_target P_miss(t) + c_fa (1 - p_target) P_fa(t)`` divided by
  the cost of the better trivial system, ``min(c_miss p_target, c_fa (1 - p_target))``.
* :func:`asv_pairings`: the attacker scenarios of the VoicePrivacy evaluation on one trial list:
  original/original, original/protected (ignorant: original enrollment, protected test),
  protected/protected (lazy-informed) and semi-informed (protected/protected with an extractor
  retrained on protected training data).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from optin.errors import OptinError

ENUMERATE_LIMIT = 4_000_000  # list all pairs up to this many, sample pair indices above


class TrialError(OptinError, ValueError):
    """A trial list that cannot be built or scored (no target or no non-target trials...)."""


# ---------------------------------------------------------------------- trials
def pair_from_index(index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode row-major indices of the pairs i < j of ``n`` items into (i, j).

    The pairs are ordered (0,1), (0,2), ..., (0,n-1), (1,2), ...; index k in [0, n(n-1)/2).
    """
    k = np.asarray(index, dtype=np.int64)
    # rows before i hold n-1, n-2, ... pairs; solve the triangular number for i
    i = n - 2 - np.floor(np.sqrt(-8.0 * k + 4.0 * n * (n - 1) - 7) / 2.0 - 0.5).astype(np.int64)
    start = i * (2 * n - i - 1) // 2  # first index of row i
    # guard against floating-point rounding at row boundaries
    low = k < start
    i[low] -= 1
    start = i * (2 * n - i - 1) // 2
    high = k >= start + (n - 1 - i)
    i[high] += 1
    start = i * (2 * n - i - 1) // 2
    return i, k - start + i + 1


def trial_counts(speakers: Sequence[str]) -> tuple[int, int]:
    """(target, non-target) counts of all pairs of distinct utterances of N speaker labels."""
    _, counts = np.unique(np.asarray([str(s) for s in speakers]), return_counts=True)
    n = int(counts.sum())
    n_target = int((counts * (counts - 1) // 2).sum())
    return n_target, n * (n - 1) // 2 - n_target


def make_trials(speakers: Sequence[str], max_trials: int | None = 20000, seed: int = 0
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Verification trials over the pairs of distinct utterances.

    Every unordered pair (i < j) is a trial when there are at most ``max_trials`` pairs (or
    ``max_trials`` is None). Otherwise a seeded sample of ``max_trials`` pairs is drawn without
    replacement, stratified: target pairs fill up to half of it (all of them when fewer),
    non-target pairs the rest (and targets take any share the non-targets cannot fill). The
    stratification does not bias EER or minDCF, which use per-class error rates.

    Args:
        speakers: N speaker labels, one per utterance.

    Returns:
        enroll_index (K,), test_index (K,) long with enroll < test, is_target (K,) bool,
        sorted by (enroll, test).

    Raises:
        TrialError: fewer than 2 utterances, or no target or no non-target pair.
    """
    labels = np.asarray([str(s) for s in speakers])
    n = len(labels)
    if n < 2:
        raise TrialError(f"verification needs at least 2 utterances, got {n}")
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n_target, n_non = trial_counts(speakers)
    n_pairs = n_target + n_non
    if n_target == 0:
        raise TrialError(f"no target trials: none of the {len(counts)} speaker(s) has two "
                         "utterances")
    if n_non == 0:
        raise TrialError(f"no non-target trials: all {n} utterances are from one speaker")
    if max_trials is not None and max_trials < 2:
        raise TrialError(f"max_trials must be >= 2 (one target and one non-target), "
                         f"got {max_trials}")
    if max_trials is None or n_pairs <= max_trials:
        enroll, test = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        want_target = min(n_target, max(1, max_trials // 2))
        want_non = min(n_non, max_trials - want_target)
        want_target = min(n_target, max_trials - want_non)
        if n_pairs <= ENUMERATE_LIMIT:
            enroll, test = np.triu_indices(n, k=1)
            same = codes[enroll] == codes[test]
            keep = np.concatenate([
                rng.choice(np.flatnonzero(same), size=want_target, replace=False),
                rng.choice(np.flatnonzero(~same), size=want_non, replace=False),
            ])
            enroll, test = enroll[keep], test[keep]
        else:  # too many pairs to list: decode sampled pair indices
            t_enroll, t_test = _sample_target_pairs(codes, counts, want_target, rng)
            n_enroll, n_test = _sample_non_target_pairs(codes, want_non, rng)
            enroll = np.concatenate([t_enroll, n_enroll])
            test = np.concatenate([t_test, n_test])
        order = np.lexsort((test, enroll))
        enroll, test = enroll[order], test[order]
    is_target = codes[enroll] == codes[test]
    return (torch.as_tensor(enroll, dtype=torch.long), torch.as_tensor(test, dtype=torch.long),
            torch.as_tensor(is_target, dtype=torch.bool))


def _sample_target_pairs(codes: np.ndarray, counts: np.ndarray, size: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` distinct same-speaker pairs (global indices i < j), uniformly."""
    order = np.argsort(codes, kind="stable")  # utterances grouped by speaker, ascending index
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    per_speaker = counts * (counts - 1) // 2
    cum = np.cumsum(per_speaker)
    picks = rng.choice(int(cum[-1]), size=size, replace=False)
    speaker = np.searchsorted(cum, picks, side="right")
    local = picks - (cum[speaker] - per_speaker[speaker])
    a, b = np.zeros_like(local), np.zeros_like(local)
    for s in np.unique(speaker):
        sel = speaker == s
        a[sel], b[sel] = pair_from_index(local[sel], int(counts[s]))
    return order[offsets[speaker] + a], order[offsets[speaker] + b]


def _sample_non_target_pairs(codes: np.ndarray, size: int, rng: np.random.Generator
                             ) -> tuple[np.ndarray, np.ndarray]:
    """``size`` distinct different-speaker pairs (i < j), uniformly, by rejection.

    Efficient when different-speaker pairs are not rare (any corpus with several speakers).
    """
    n = len(codes)
    n_pairs = n * (n - 1) // 2
    chosen = np.empty(0, dtype=np.int64)
    while len(chosen) < size:
        draw = rng.integers(0, n_pairs, size=2 * (size - len(chosen)) + 16)
        i, j = pair_from_index(draw, n)
        draw = draw[codes[i] != codes[j]]
        # keep first occurrences in draw order, so the sample stays uniform
        merged = np.concatenate([chosen, draw])
        _, first = np.unique(merged, return_index=True)
        chosen = merged[np.sort(first)][:size]
    return pair_from_index(chosen, n)


# ---------------------------------------------------------------------- scoring
def cosine_scores(enroll_emb: Tensor, test_emb: Tensor, enroll_index: Tensor,
                  test_index: Tensor) -> Tensor:
    """Cosine similarity per trial.

    Args:
        enroll_emb: (N, D) enrollment-side embeddings; test_emb: (M, D) test-side embeddings.
        enroll_index, test_index: (K,) rows of each.

    Returns:
        (K,) float scores in [-1, 1].
    """
    e = torch.as_tensor(enroll_emb, dtype=torch.float32)
    t = torch.as_tensor(test_emb, dtype=torch.float32)
    if e.ndim != 2 or t.ndim != 2 or e.shape[1] != t.shape[1]:
        raise ValueError(f"embeddings must be (N, D) and (M, D) with the same D, got "
                         f"{tuple(e.shape)} and {tuple(t.shape)}")
    e = torch.nn.functional.normalize(e, dim=1)
    t = torch.nn.functional.normalize(t, dim=1)
    ei = torch.as_tensor(enroll_index, dtype=torch.long)
    ti = torch.as_tensor(test_index, dtype=torch.long)
    return (e[ei] * t[ti]).sum(dim=1)  # (K,)


def _error_rates(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points at every distinct threshold, from +inf down to the lowest score.

    Returns:
        thresholds (P,) with +inf first, FAR (P,) increasing from 0, FRR (P,) decreasing to 0.
    """
    s = np.asarray(torch.as_tensor(scores).detach().cpu(), dtype=np.float64).ravel()
    y = np.asarray(torch.as_tensor(labels).detach().cpu()).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    n_target, n_non = int(y.sum()), int((~y).sum())
    if n_target == 0 or n_non == 0:
        raise TrialError(f"need target and non-target trials (got {n_target} target, "
                         f"{n_non} non-target)")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # accepted counts with the threshold at each distinct score (ties move together)
    last = np.r_[s[1:] != s[:-1], True]
    targets_accepted = np.cumsum(y)[last]
    non_accepted = np.cumsum(~y)[last]
    thresholds = np.r_[np.inf, s[last]]
    far = np.r_[0.0, non_accepted / n_non]
    frr = np.r_[1.0, 1.0 - targets_accepted / n_target]
    return thresholds, far, frr


def eer(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold.

    Args:
        scores: (K,) trial scores (higher = more likely the same speaker).
        labels: (K,) True / 1 for target trials.

    Returns:
        (eer, threshold): eer in [0, 1] where FAR = FRR on the linearly interpolated ROC;
        the threshold is interpolated between the two neighbouring ROC thresholds (the lower
        one when the crossing is at a point or the upper one is +inf).
    """
    thresholds, far, frr = _error_rates(scores, labels)
    diff = frr - far  # starts at 1, ends <= 0
    k = int(np.argmax(diff <= 0))  # first ROC point at or past the crossing
    a = diff[k - 1] / (diff[k - 1] - diff[k])  # in (0, 1]
    rate = far[k - 1] + a * (far[k] - far[k - 1])
    upper = thresholds[k - 1]
    threshold = thresholds[k] if not np.isfinite(upper) else upper + a * (thresholds[k] - upper)
    return float(rate), float(threshold)


def min_dcf(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray, p_target: float = 0.01,
            c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised minimum detection cost over all thresholds (+inf and -inf included)."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")
    _, far, frr = _error_rates(scores, labels)  # the last point is FAR = 1, FRR = 0
    cost = c_miss * p_target * frr + c_fa * (1.0 - p_target) * far
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


# ---------------------------------------------------------------------- attacker scenarios
def verification_metrics(scores: Tensor, is_target: Tensor, p_target: float = 0.01
                         ) -> dict[str, float | int]:
    """{"eer", "min_dcf", "trials", "target_trials"} of one scored trial list."""
    return {
        "eer": eer(scores, is_target)[0],
        "min_dcf": min_dcf(scores, is_target, p_target=p_target),
        "trials": int(is_target.numel()),
        "target_trials": int(is_target.sum()),
    }


def asv_pairings(
    original: Tensor,
    protected: Tensor | None,
    speakers: Sequence[str],
    semi_informed: Tensor | None = None,
    output_only: Tensor | None = None,
    max_trials: int | None = 20000,
    seed: int = 0,
    p_target: float = 0.01,
) -> dict[str, dict[str, float | int]]:
    """Verification under the VoicePrivacy attacker scenarios, all on one trial list.

    Args:
        original: (N, D) x-vectors of the original utterances.
        protected: (N, D) x-vectors of the same utterances after protection (same extractor),
            or None for the original condition only.
        speakers: N speaker labels.
        semi_informed: (N, D) x-vectors of the protected utterances from an extractor
            retrained on protected training data, or None to skip that scenario.
        output_only: (N, K) the permitted model's answers (posteriors) on the protected
            utterances, scored as embeddings: the verification that what the user permitted
            allows by itself (the floor of an opt-in system), or None to skip it.

    Returns:
        {"original/original", "original/protected", "protected/protected", "semi-informed",
        "output-only"}
        (those that the inputs allow) -> {"eer", "min_dcf", "trials", "target_trials"}.
    """
    n = len(speakers)
    for name, emb in (("original", original), ("protected", protected),
                      ("semi_informed", semi_informed), ("output_only", output_only)):
        if emb is not None and (emb.ndim != 2 or emb.shape[0] != n):
            raise ValueError(f"{name} embeddings must be (N, D) with N = {n} speakers' rows, "
                             f"got {tuple(emb.shape)}")
    enroll, test, target = make_trials(speakers, max_trials=max_trials, seed=seed)
    pairs = {"original/original": (original, original)}
    if protected is not None:
        pairs["original/protected"] = (original, protected)
        pairs["protected/protected"] = (protected, protected)
    if semi_informed is not None:
        pairs["semi-informed"] = (semi_informed, semi_informed)
    if output_only is not None:
        pairs["output-only"] = (output_only, output_only)
    return {name: verification_metrics(cosine_scores(e, t, enroll, test), target, p_target)
            for name, (e, t) in pairs.items()}
