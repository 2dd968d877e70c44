"""The paper's two split protocols, stratified and seeded, written into the ``split`` column.

* ``speaker-disjoint`` (LibriSpeech, VoxCeleb2): every speaker's rows go to one split, so test
  speakers are never seen in training. Speakers are stratified by a speaker-level column
  (``gender`` by default) so each split keeps the corpus's gender balance.
* ``same-speakers`` (EmoV-DB, RAVDESS): every speaker appears in every split, with different
  fragments (clips). Rows are stratified by ``speaker`` x ``emotion`` (the columns present), so each
  speaker-emotion cell is divided in the same proportions.

Within each stratum the members are sorted, shuffled by ``random.Random(seed)`` and cut by
rounding the cumulative fractions, so the same manifest and seed always give the same split.
With ``keep_test=True`` the rows already marked ``test`` (a corpus's official test set) stay
there and only the rest is divided into train and valid.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from optin.corpora.manifest import Manifest, ManifestError

Protocol = Literal["speaker-disjoint", "same-speakers"]
PROTOCOLS: tuple[str, ...] = ("speaker-disjoint", "same-speakers")


def assign_split(
    manifest: Manifest,
    protocol: Protocol,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.1,
    seed: int = 0,
    stratify: Sequence[str] | None = None,
    keep_test: bool = False,
) -> Manifest:
    """A copy of ``manifest`` whose ``split`` column is train / valid / test.

    Args:
        protocol: ``speaker-disjoint`` or ``same-speakers`` (see the module docstring).
        test_fraction, valid_fraction: shares of speakers (speaker-disjoint) or of rows in each
            stratum (same-speakers); with ``keep_test`` the test rows are kept and
            ``valid_fraction`` is a share of the remaining rows.
        stratify: columns to stratify by; default ``("gender",)`` for speaker-disjoint and
            ``("speaker", "emotion")`` for same-speakers, each used only if the manifest has it.
    """
    if protocol not in PROTOCOLS:
        raise ManifestError(
            f"unknown split protocol '{protocol}'; use one of {', '.join(PROTOCOLS)}"
        )
    if not (0 <= test_fraction < 1 and 0 <= valid_fraction < 1
            and test_fraction + valid_fraction < 1):
        raise ManifestError(
            f"split fractions must be in [0, 1) and sum below 1 "
            f"(test {test_fraction}, valid {valid_fraction})"
        )
    if stratify is None:
        stratify = ("gender",) if protocol == "speaker-disjoint" else ("speaker", "emotion")
    stratify = [c for c in stratify if c in manifest.columns]

    fixed_test: set[int] = set()
    if keep_test:
        if "split" not in manifest.columns or not any(r["split"] == "test" for r in manifest):
            raise ManifestError("keep_test needs rows already marked split=test")
        fixed_test = {i for i, r in enumerate(manifest.rows) if r["split"] == "test"}
        shares = (("train", 1.0 - valid_fraction), ("valid", valid_fraction))
    else:
        shares = (
            ("train", 1.0 - test_fraction - valid_fraction),
            ("valid", valid_fraction),
            ("test", test_fraction),
        )
    free = [i for i in range(len(manifest.rows)) if i not in fixed_test]
    rng = random.Random(seed)
    labels = ["test"] * len(manifest.rows)

    if protocol == "speaker-disjoint":
        speakers_of: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for i in free:
            row = manifest.rows[i]
            speakers_of[_speaker_stratum(manifest, row["speaker"], stratify)].add(row["speaker"])
        split_of_speaker: dict[str, str] = {}
        for key in sorted(speakers_of):
            for spk, name in zip(*cut_shares(sorted(speakers_of[key]), shares, rng), strict=True):
                split_of_speaker[spk] = name
        for i in free:
            labels[i] = split_of_speaker[manifest.rows[i]["speaker"]]
    else:
        strata: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i in free:
            strata[tuple(manifest.rows[i][c] for c in stratify)].append(i)
        for key in sorted(strata):
            members = sorted(strata[key], key=lambda i: manifest.rows[i]["id"])
            for i, name in zip(*cut_shares(members, shares, rng), strict=True):
                labels[i] = name
    return manifest.with_column("split", labels)


def _speaker_stratum(manifest: Manifest, speaker: str, stratify: Sequence[str]) -> tuple[str, ...]:
    """The stratum of a speaker: values of the stratify columns on its rows (must agree)."""
    values = {
        tuple(r[c] for c in stratify) for r in manifest.rows if r["speaker"] == speaker
    } if stratify else {()}
    if len(values) > 1:
        raise ManifestError(
            f"speaker '{speaker}' has rows with different {'/'.join(stratify)} values "
            f"({sorted(values)}); a speaker-disjoint split needs one value per speaker"
        )
    return values.pop()


def cut_shares(items: list, shares: Sequence[tuple[str, float]], rng: random.Random
               ) -> tuple[list, list[str]]:
    """Shuffle ``items`` and label them by rounding cumulative shares.

    A stratum with at least as many items as there are splits with a positive share gives
    each such split at least one item, so small strata still reach test and valid.
    """
    items = list(items)
    rng.shuffle(items)
    n = len(items)
    positive = [name for name, share in shares if share > 0]
    counts = [round(share * n) for _, share in shares]
    counts[0] = n - sum(counts[1:])
    if n >= len(positive):
        for k, (_, share) in enumerate(shares):
            if share > 0 and counts[k] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[k] += 1
    names: list[str] = []
    for (name, _), c in zip(shares, counts, strict=True):
        names += [name] * max(c, 0)
    return items, names[:n] + [shares[0][0]] * (n - len(names))


def split_summary(manifest: Manifest) -> dict[str, dict[str, int]]:
    """Rows and speakers per split, e.g. ``{"train": {"rows": 900, "speakers": 24}, ...}``."""
    out: dict[str, dict[str, int]] = {}
    for name in ("train", "valid", "test"):
        rows = [r for r in manifest.rows if r.get("split") == name]
        out[name] = {"rows": len(rows), "speakers": len({r["speaker"] for r in rows})}
    return out


def carve_valid(manifest: Manifest, valid_fraction: float, seed: int) -> Manifest:
    """Divide the rows marked ``train`` speaker-disjointly into train and valid.

    Rows already marked ``valid`` or ``test`` keep their split; the train pool is split by
    ``assign_split(..., "speaker-disjoint")`` (stratified by gender) with no test share, which
    is what ``keep_test=True`` does, but it also works when there are no test rows.

    Raises:
        ManifestError: a speaker has rows both in the training pool and in valid or test.
    """
    pool = manifest.filter(lambda r: r["split"] == "train")
    if len(pool) == 0:
        return manifest
    held_out = {r["speaker"] for r in manifest if r["split"] in ("valid", "test")}
    shared = sorted(held_out & set(pool.column("speaker")))
    if shared:
        raise ManifestError(f"speaker(s) {', '.join(shared[:5])} have rows in the training pool "
                            "and in valid or test; the split would not be speaker-disjoint")
    carved = assign_split(pool, "speaker-disjoint", test_fraction=0.0,
                          valid_fraction=valid_fraction, seed=seed)
    split_of = {r["id"]: r["split"] for r in carved}
    return manifest.with_column("split", [split_of.get(r["id"], r["split"]) for r in manifest])
