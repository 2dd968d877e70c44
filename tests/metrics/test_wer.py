"""Word error rate: normalisation, edit counts by kind, corpus-level rate."""

from __future__ import annotations

import pytest

from optin.metrics.wer import (
    EditCounts,
    edit_counts,
    normalize_words,
    total_counts,
    word_error_rate,
)


def test_normalize_lower_cases_and_strips_punctuation():
    assert normalize_words("The train leaves, at half-past NINE!") == \
        ["the", "train", "leaves", "at", "half", "past", "nine"]


def test_normalize_keeps_apostrophes_inside_words_only():
    assert normalize_words("Don't say 'hello' to the dogs' owner \u2019twas") == \
        ["don't", "say", "hello", "to", "the", "dogs", "owner", "twas"]
    assert normalize_words("  \t\n ") == []
    assert normalize_words("...") == []


def test_identical_sequences_have_no_edits():
    counts = edit_counts(["a", "b", "c"], ["a", "b", "c"])
    assert counts == EditCounts(0, 0, 0, 3)
    assert counts.hits == 3


def test_one_substitution():
    assert edit_counts(["the", "cat", "sat"], ["the", "bat", "sat"]) == EditCounts(1, 0, 0, 3)


def test_empty_hypothesis_is_all_deletions():
    assert edit_counts(["one", "two", "three"], []) == EditCounts(0, 3, 0, 3)


def test_empty_reference_is_all_insertions():
    assert edit_counts([], ["uh", "um"]) == EditCounts(0, 0, 2, 0)


def test_insertions_only():
    counts = edit_counts(["a", "b"], ["x", "a", "y", "b", "z"])
    assert counts == EditCounts(0, 0, 3, 2)
    assert counts.errors == 3


def test_deletion_and_insertion_found_by_the_backtrace():
    # "b" deleted and "e" inserted: 2 edits (not 4 substitutions)
    counts = edit_counts(["a", "b", "c", "d"], ["a", "c", "d", "e"])
    assert counts == EditCounts(0, 1, 1, 4)


def test_mixed_edits_sum_to_levenshtein_distance():
    ref = ["i", "want", "to", "go", "to", "the", "park", "today"]
    hyp = ["i", "want", "go", "to", "a", "park", "to", "day"]
    counts = edit_counts(ref, hyp)
    # "to" deleted, "the" -> "a", "today" -> "to", "day" inserted: 4 edits
    assert counts.errors == 4
    assert counts.reference == 8
    assert counts.hits == counts.reference - counts.substitutions - counts.deletions


def test_corpus_wer_is_total_edits_over_total_reference_words():
    pairs = [("the cat sat", "the bat sat"),  # 1 of 3
             ("Hello, world.", ""),  # 2 of 2
             ("a b c d e", "a b c d e")]  # 0 of 5
    assert word_error_rate(pairs) == pytest.approx(3 / 10)
    assert total_counts(pairs) == EditCounts(1, 2, 0, 10)


def test_wer_can_exceed_one_with_insertions():
    assert word_error_rate([("yes", "no no no")]) == pytest.approx(3.0)


def test_wer_takes_word_lists_as_given():
    assert word_error_rate([(["Hello"], ["hello"])]) == 1.0  # not normalised
    assert word_error_rate([("Hello", "hello")]) == 0.0


def test_wer_without_reference_words_is_refused():
    with pytest.raises(ValueError, match="no words"):
        word_error_rate([("", "something"), ("...", "")])
    with pytest.raises(ValueError, match="no words"):
        word_error_rate([])
