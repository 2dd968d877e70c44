"""Word error rate: text normalisation, edit counts with a backtrace, corpus-level WER.

WER = (substitutions + deletions + insertions) / reference words, summed over a corpus
(not averaged per utterance, so long utterances weigh more, as in every ASR benchmark).
Pure functions of strings and word lists; no recognizer here (see
:mod:`optin.evaluation.content`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# a word: letters/digits, with apostrophes allowed only between them ("don't", "o'clock")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


@dataclass(frozen=True)
class EditCounts:
    """The edits that turn a reference word list into a hypothesis (a minimal alignment).

    Attributes:
        substitutions, deletions, insertions: the edit operations of one minimal alignment.
        reference: the number of reference words (the WER denominator).
    """

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference: int = 0

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions (the Levenshtein distance)."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def hits(self) -> int:
        """Reference words matched exactly."""
        return self.reference - self.substitutions - self.deletions

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(self.substitutions + other.substitutions,
                          self.deletions + other.deletions,
                          self.insertions + other.insertions,
                          self.reference + other.reference)


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation.

    Apostrophes are kept inside words ("Don't" -> "don't") and dropped at their edges
    ("'quoted'" -> "quoted"); every other punctuation mark separates words ("half-past" ->
    "half", "past"). Curly apostrophes count as straight ones.
    """
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return _WORD.findall(text)


def edit_counts(reference: Sequence[str], hypothesis: Sequence[str]) -> EditCounts:
    """Levenshtein alignment of two word lists, counted by kind of edit.

    All edits cost 1. Among the minimal alignments, the backtrace prefers a match or
    substitution, then a deletion, then an insertion, so the counts are deterministic.
    """
    ref, hyp = list(reference), list(hypothesis)
    n, m = len(ref), len(hyp)
    # cost[i][j]: edits turning ref[:i] into hyp[:j]
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        row, above = cost[i], cost[i - 1]
        for j in range(1, m + 1):
            diagonal = above[j - 1] + (ref[i - 1] != hyp[j - 1])
            row[j] = min(diagonal, above[j] + 1, row[j - 1] + 1)
    subs = dels = ins = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            subs += ref[i - 1] != hyp[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            dels += 1
            i -= 1
        else:
            ins += 1
            j -= 1
    return EditCounts(subs, dels, ins, n)


def total_counts(pairs: Iterable[tuple[str | Sequence[str], str | Sequence[str]]]
                 ) -> EditCounts:
    """Edit counts summed over ``(reference, hypothesis)`` pairs; strings are normalised with
    :func:`normalize_words`, word lists are taken as they are."""
    total = EditCounts()
    for reference, hypothesis in pairs:
        total = total + edit_counts(_words(reference), _words(hypothesis))
    return total


def word_error_rate(pairs: Iterable[tuple[str | Sequence[str], str | Sequence[str]]]) -> float:
    """Corpus-level WER of ``(reference, hypothesis)`` pairs: total edits / reference words.

    Strings are normalised with :func:`normalize_words`. It can exceed 1 (insertions).

    Raises:
        ValueError: the references hold no word at all (the rate is undefined; an empty
            reference with a non-empty hypothesis would otherwise give an infinite rate).
    """
    counts = total_counts(pairs)
    if counts.reference == 0:
        raise ValueError("word error rate: the references hold no words, so the rate is "
                         "undefined")
    return counts.errors / counts.reference


def _words(text: str | Sequence[str]) -> list[str]:
    return normalize_words(text) if isinstance(text, str) else list(text)
