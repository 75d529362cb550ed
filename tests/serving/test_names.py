"""Model names and versions become cache directories and store keys, so only plain path segments are accepted."""

from __future__ import annotations

import re

import pytest

from serving.names import checked_name, is_valid_name


@pytest.mark.parametrize("name", ["whisper-base", "whisper-tiny.en", "1.1.0", "2024-01-10", "v2_rc1", "x" * 64])
def test_plain_names_are_accepted(name):
    assert is_valid_name(name) and checked_name(name) == name


@pytest.mark.parametrize(
    "name",
    [".", "..", "...", ".hidden", "-flag", "a/b", "a\\b", "../1.0.0", "1.0.0/..", "", " ", "x" * 65, "é", "1.0\n"],
)
def test_dot_only_hidden_separated_empty_and_long_names_are_refused(name):
    assert not is_valid_name(name)
    with pytest.raises(ValueError, match=re.escape("is not accepted; use 1-64 letters, digits, '.', '_' or '-'")):
        checked_name(name, "model version")
