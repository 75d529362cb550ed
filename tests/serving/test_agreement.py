"""LocalAgreement-2 on its own: what two drafts in a row agree on is settled, and settled words never change."""

from __future__ import annotations

from serving.agreement import LocalAgreement


def test_nothing_is_committed_until_two_drafts_agree_and_the_edge_word_never_is():
    agreement = LocalAgreement()
    assert agreement.accept("Please call") == "Please call" and agreement.committed == ""
    assert agreement.accept("Please call Stel") == "Please call Stel"
    assert agreement.committed == "Please", "'call' is the edge word of the first draft: it may still change"
    assert agreement.accept("Please call Stella and") == "Please call Stella and"
    assert agreement.committed == "Please call"


def test_a_draft_that_disagrees_keeps_the_committed_words_and_commits_nothing_new():
    agreement = LocalAgreement()
    agreement.accept("the birch canoe slid")
    agreement.accept("the birch canoe slid on")
    assert agreement.committed == "the birch canoe"
    text = agreement.accept("the birch canoe sled in the")
    assert text == "the birch canoe sled in the" and agreement.committed == "the birch canoe"


def test_a_draft_that_ignored_the_prefix_is_aligned_by_position_so_committed_words_stay():
    agreement = LocalAgreement()
    agreement.accept("one two three four")
    agreement.accept("one two three four five")
    assert agreement.committed == "one two three"
    assert agreement.accept("won too three four five six") == "one two three four five six"
    assert agreement.committed == "one two three four"


def test_case_and_punctuation_do_not_make_drafts_disagree_and_the_later_spelling_is_kept():
    agreement = LocalAgreement()
    agreement.accept("please call stella and")
    agreement.accept("Please call Stella, and ask")
    assert agreement.committed == "Please call Stella,"
