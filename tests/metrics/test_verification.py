"""Speaker verification: trial lists, EER, minDCF, cosine scoring, attacker pairings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optin.metrics import verification
from optin.metrics.verification import (
    TrialError,
    asv_pairings,
    cosine_scores,
    eer,
    make_trials,
    min_dcf,
    pair_from_index,
    trial_counts,
)


def labels_of(n_target: int, n_non: int) -> np.ndarray:
    return np.r_[np.ones(n_target, bool), np.zeros(n_non, bool)]


# ---------------------------------------------------------------------- EER
def test_perfect_separation_gives_zero():
    scores = np.r_[[0.9, 0.8, 0.75], [0.3, 0.1, -0.2, 0.5]]
    rate, threshold = eer(scores, labels_of(3, 4))
    assert rate == 0.0
    assert 0.5 < threshold <= 0.75


def test_inverted_scores_give_one():
    rate, _ = eer(np.r_[[0.1, 0.2], [0.8, 0.9, 0.7]], labels_of(2, 3))
    assert rate == pytest.approx(1.0)


def test_hand_made_crossing_between_roc_points():
    # ROC points (FAR, FRR): (0, 1) (0, .5) at 0.9, (.25, .5) at 0.7, (.25, 0) at 0.5 ...
    # FRR - FAR goes from .25 to -.25 between thresholds 0.7 and 0.5: EER .25 at 0.6
    scores = torch.tensor([0.9, 0.5, 0.7, 0.3, 0.2, 0.1])
    rate, threshold = eer(scores, torch.tensor(labels_of(2, 4)))
    assert rate == pytest.approx(0.25)
    assert threshold == pytest.approx(0.6)


def test_crossing_on_a_roc_point_and_ties():
    scores = np.r_[[0.9, 0.8, 0.3], [0.7, 0.2, 0.1]]
    assert eer(scores, labels_of(3, 3)) == pytest.approx((1 / 3, 0.7))
    # a target and a non-target with the same score move together: no optimistic order
    tied = np.r_[[0.5, 0.5], [0.5, 0.5]]
    assert eer(tied, labels_of(2, 2))[0] == pytest.approx(0.5)


def test_two_gaussians_match_the_analytic_eer():
    rng = np.random.default_rng(0)
    d = 2.0  # targets N(d, 1), non-targets N(0, 1): EER = Phi(-d / 2)
    n = 20000
    scores = np.r_[rng.normal(d, 1.0, n), rng.normal(0.0, 1.0, n)]
    expected = 0.5 * math.erfc((d / 2) / math.sqrt(2))  # 0.1587
    rate, threshold = eer(scores, labels_of(n, n))
    assert rate == pytest.approx(expected, abs=0.008)
    assert threshold == pytest.approx(d / 2, abs=0.05)
    # invariant to a monotone map of the scores
    assert eer(np.tanh(scores / 3), labels_of(n, n))[0] == pytest.approx(rate)


def test_score_errors_are_clear():
    with pytest.raises(TrialError, match="target and non-target"):
        eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        eer([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="NaN"):
        eer([0.1, float("nan")], [1, 0])


# ---------------------------------------------------------------------- minDCF
def test_min_dcf_hand_computed():
    scores = np.r_[[0.9, 0.5], [0.7, 0.3, 0.2, 0.1]]
    labels = labels_of(2, 4)
    # (FAR, FRR) points: (0,1) (0,.5) (.25,.5) (.25,0) (.5,0) (.75,0) (1,0)
    # p_target .5: costs .5 .25 .375 .125 ... / .5 -> .25
    assert min_dcf(scores, labels, p_target=0.5) == pytest.approx(0.25)
    # p_target .01: .01, .005, ..., .2475 ... / .01 -> 0.5
    assert min_dcf(scores, labels, p_target=0.01) == pytest.approx(0.5)
    # c_miss 10, p .5: 5, 2.5, 2.75, .125 ... / min(5, .5) -> .25
    assert min_dcf(scores, labels, p_target=0.5, c_miss=10) == pytest.approx(0.25)
    assert min_dcf(np.r_[[0.9], [0.1]], labels_of(1, 1)) == 0.0
    rng = np.random.default_rng(1)
    assert min_dcf(rng.normal(size=400), rng.random(400) < 0.5) <= 1.0  # never above trivial
    with pytest.raises(ValueError, match="p_target"):
        min_dcf(scores, labels, p_target=1.0)


# ---------------------------------------------------------------------- trials
SPEAKERS = [f"s{k}" for k in range(8) for _ in range(5)]  # 8 speakers x 5 utterances


def test_all_pairs_when_few():
    enroll, test, target = make_trials(SPEAKERS, max_trials=20000)
    assert len(target) == 40 * 39 // 2 == 780
    assert int(target.sum()) == 8 * 10
    assert (enroll < test).all()
    assert len({(int(a), int(b)) for a, b in zip(enroll, test, strict=True)}) == 780
    same = torch.tensor([SPEAKERS[a] == SPEAKERS[b] for a, b in zip(enroll, test, strict=True)])
    assert torch.equal(same, target)
    assert trial_counts(SPEAKERS) == (80, 700)
    assert len(make_trials(SPEAKERS, max_trials=None)[2]) == 780


@pytest.mark.parametrize("limit", [verification.ENUMERATE_LIMIT, 0])
def test_capped_sample_is_seeded_and_stratified(monkeypatch, limit):
    monkeypatch.setattr(verification, "ENUMERATE_LIMIT", limit)  # 0: the pair-decoding path
    enroll, test, target = make_trials(SPEAKERS, max_trials=100, seed=3)
    assert len(target) == 100 and int(target.sum()) == 50
    assert (enroll < test).all()
    assert len({(int(a), int(b)) for a, b in zip(enroll, test, strict=True)}) == 100
    same = torch.tensor([SPEAKERS[a] == SPEAKERS[b] for a, b in zip(enroll, test, strict=True)])
    assert torch.equal(same, target)
    again = make_trials(SPEAKERS, max_trials=100, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(again, (enroll, test, target), strict=True))
    other = make_trials(SPEAKERS, max_trials=100, seed=4)
    assert not torch.equal(other[0], enroll) or not torch.equal(other[1], test)
    # fewer targets than half the cap: all of them are kept, non-targets fill the rest
    _, _, target = make_trials(SPEAKERS, max_trials=300, seed=0)
    assert len(target) == 300 and int(target.sum()) == 80


def test_pair_decoding_matches_the_row_major_order():
    for n in (2, 3, 7, 50, 301):
        i, j = np.triu_indices(n, k=1)
        di, dj = pair_from_index(np.arange(len(i)), n)
        assert np.array_equal(di, i) and np.array_equal(dj, j)


def test_trial_errors_name_the_problem():
    with pytest.raises(TrialError, match="no target trials"):
        make_trials(["a", "b", "c"])
    with pytest.raises(TrialError, match="no non-target trials"):
        make_trials(["a", "a", "a"])
    with pytest.raises(TrialError, match="at least 2"):
        make_trials(["a"])
    with pytest.raises(TrialError, match="max_trials"):
        make_trials(SPEAKERS, max_trials=1)


# ---------------------------------------------------------------------- scoring
def test_cosine_scores():
    enroll = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    test = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    scores = cosine_scores(enroll, test, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]))
    assert torch.allclose(scores, torch.tensor([1.0, 2**-0.5, 0.0]), atol=1e-6)
    with pytest.raises(ValueError, match="same D"):
        cosine_scores(enroll, torch.ones(2, 3), torch.tensor([0]), torch.tensor([0]))


def _embeddings(n_speakers: int, per: int, spread: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_speakers, 32, generator=gen)
    noise = torch.randn(n_speakers * per, 32, generator=gen)
    return centres.repeat_interleave(per, dim=0) + spread * noise


def test_asv_pairings_cover_the_attacker_scenarios():
    speakers = [f"s{k}" for k in range(10) for _ in range(6)]
    original = _embeddings(10, 6, 0.3, seed=0)
    protected = torch.randn(60, 32, generator=torch.Generator().manual_seed(1))  # no identity
    retrained = _embeddings(10, 6, 0.5, seed=2)
    result = asv_pairings(original, protected, speakers, semi_informed=retrained,
                          max_trials=1000, seed=0)
    assert set(result) == {"original/original", "original/protected", "protected/protected",
                           "semi-informed"}
    assert all(r["trials"] == 1000 and r["target_trials"] == 150 for r in result.values())
    assert result["original/original"]["eer"] < 0.05
    assert result["semi-informed"]["eer"] < 0.15
    assert abs(result["original/protected"]["eer"] - 0.5) < 0.12
    assert abs(result["protected/protected"]["eer"] - 0.5) < 0.12
    assert result["protected/protected"]["min_dcf"] > 0.9
    only = asv_pairings(original, None, speakers, max_trials=1000)
    assert set(only) == {"original/original"}
    assert only["original/original"] == result["original/original"]
    with pytest.raises(ValueError, match="protected"):
        asv_pairings(original, protected[:10], speakers)


def test_output_only_pairing_gives_the_floor_of_a_gender_only_answer():
    """Ten speakers, five per gender, and answers that are the gender alone: a verifier that
    sees only those answers accepts every same-gender impostor (4 of 9 impostor pairs), so
    its EER is the hull point FAR = FRR = 1 / (1 + 9/4) = 0.308: the floor of any system that
    keeps gender, however well it hides the rest."""
    speakers = [f"s{i}" for i in range(10) for _ in range(6)]
    gender = torch.tensor([int(s[1:]) % 2 for s in speakers])
    answers = torch.nn.functional.one_hot(gender, 2).float()
    original = torch.randn(len(speakers), 8)
    result = asv_pairings(original, None, speakers, output_only=answers, max_trials=None)
    assert set(result) == {"original/original", "output-only"}
    assert result["output-only"]["eer"] == pytest.approx(4 / 13, abs=0.02)
