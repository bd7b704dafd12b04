"""docs/reliability.md's claims name the tests that show them: every test it cites exists."""
import pathlib
import re

TESTS = pathlib.Path(__file__).resolve().parent
DOC = TESTS.parent / "docs" / "reliability.md"


def defined_tests(path):
    return set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.MULTILINE))


def cited(text):
    """(file or None, test name or None) of each `tests/test_x.py`, `test_x.py::test_name` and
    bare `test_name` the text cites in backticks."""
    for ref in re.findall(r"`([^`\s]*test_\w+(?:\.py)?(?:::\w+)?)`", text):
        file, _, name = ref.partition("::")
        if file.endswith(".py"):
            yield pathlib.Path(file).name, name or None
        elif not file:  # `::test_name` names no file: a citation that cannot be checked
            yield "(no file)", name
        else:
            yield None, file


def test_every_test_the_reliability_doc_cites_exists():
    refs = list(cited(DOC.read_text()))
    assert len(refs) >= 5  # the doc cites tests; a change to its form must not make this test vacuous
    everywhere = set().union(*(defined_tests(p) for p in TESTS.glob("test_*.py")))
    missing = []
    for file, name in refs:
        if file is not None and not (TESTS / file).is_file():
            missing.append(file)
        elif name is not None and name not in (defined_tests(TESTS / file) if file else everywhere):
            missing.append(f"{file}::{name}" if file else name)
    assert not missing, f"docs/reliability.md cites tests that do not exist: {missing}"


def test_the_citation_finder_reads_each_form():
    text = "`tests/test_a.py`, `test_b.py::test_c` and `test_d`, not `segnet/test.py` nor test_e"
    assert list(cited(text)) == [("test_a.py", None), ("test_b.py", "test_c"), (None, "test_d")]
