"""The order the workers take the files in (tests/conftest.py): longest first, by tests/durations.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.conftest import MYPY_TEST, expected_durations, longest_files_first, merged_durations, mypy_cache_dir


@dataclass(frozen=True)
class Item:
    path: Path
    nodeid: str


def _items(*nodeids: str) -> list[Item]:
    return [Item(Path(nodeid.split("::")[0]), nodeid) for nodeid in nodeids]


def test_files_go_longest_first_with_their_tests_together_in_their_own_order():
    items = _items("a.py::one", "b.py::two", "b.py::one", "c.py::one", "a.py::two")
    recorded = {"a.py::one": 1.0, "a.py::two": 2.0, "b.py::one": 9.0, "b.py::two": 0.5, "c.py::one": 4.0}
    ordered = longest_files_first(items, recorded)
    assert [item.nodeid for item in ordered] == ["b.py::two", "b.py::one", "c.py::one", "a.py::one", "a.py::two"]


def test_a_file_with_no_test_on_record_goes_first_and_a_new_test_counts_as_the_median():
    items = _items("old.py::short", "old.py::new", "other.py::long", "new.py::one")
    recorded = {"old.py::short": 1.0, "other.py::long": 3.0, "elsewhere.py::x": 2.0}
    ordered = longest_files_first(items, recorded)
    # old.py: 1 + the median 2 = 3 s, as long as other.py: the stable sort keeps their collected order.
    assert [item.nodeid for item in ordered] == ["new.py::one", "old.py::short", "old.py::new", "other.py::long"]


def test_a_run_updates_its_tests_keeps_the_others_and_drops_the_tests_of_deleted_files(tmp_path):
    (tmp_path / "kept.py").write_text("")
    recorded = {"kept.py::ran": 5.0, "kept.py::skipped": 1.0, "gone.py::old": 3.0}
    merged = merged_durations(recorded, {"kept.py::ran": 2.345, "kept.py::new": 0.5}, tmp_path)
    assert merged == {"kept.py::new": 0.5, "kept.py::ran": 2.35, "kept.py::skipped": 1.0}


def test_without_a_mypy_cache_mypy_is_expected_to_take_as_long_as_its_first_run():
    recorded = {MYPY_TEST: 3.5, "tests/test_code_quality.py::test_ruff_finds_nothing": 0.2, "long.py::x": 20.0}
    assert expected_durations(recorded, mypy_cached=True) == recorded
    cold = expected_durations(recorded, mypy_cached=False)
    assert cold == {**recorded, MYPY_TEST: 30.0}
    items = _items("long.py::x", "tests/test_code_quality.py::test_ruff_finds_nothing", MYPY_TEST)
    assert longest_files_first(items, cold)[0].path.name == "test_code_quality.py"
    assert longest_files_first(items, recorded)[0].path.name == "long.py"


def test_the_mypy_cache_is_found_where_mypy_keeps_it(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.mypy]\ncache_dir = "~/.cache/mypy/$PROJECT"\n')
    monkeypatch.setenv("HOME", "/home/ci")
    monkeypatch.setenv("PROJECT", "speech")
    monkeypatch.delenv("MYPY_CACHE_DIR", raising=False)
    assert mypy_cache_dir(tmp_path) == Path("/home/ci/.cache/mypy/speech")
    monkeypatch.setenv("MYPY_CACHE_DIR", "cache")
    assert mypy_cache_dir(tmp_path) == tmp_path / "cache"
    monkeypatch.setenv("MYPY_CACHE_DIR", " ")  # blank: mypy ignores it
    (tmp_path / "pyproject.toml").write_text("[tool.mypy]\n")
    assert mypy_cache_dir(tmp_path) == tmp_path / ".mypy_cache"
