"""The policy tables in docs/ are exactly the ones the code generates."""

from __future__ import annotations

from pathlib import Path

from pappus.engines.process.policy import policy_markdown, runner_calls_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"


def documented(page: str, table: str) -> str:
    """The text between ``<!-- {table}: begin -->`` and its end marker in ``docs/{page}``."""
    text = (DOCS / page).read_text()
    begin, end = f"<!-- {table}: begin -->\n", f"<!-- {table}: end -->"
    return text[text.index(begin) + len(begin):text.index(end)]


def test_the_documented_policy_table_is_the_generated_one() -> None:
    assert documented("process-engine.md", "policy table") == policy_markdown(), (
        "docs/process-engine.md is stale: paste policy_markdown() between the markers")


def test_the_documented_runner_calls_are_the_generated_ones() -> None:
    assert documented("process-engine.md", "runner calls table") == runner_calls_markdown(), (
        "docs/process-engine.md is stale: paste runner_calls_markdown() between the markers")


def test_the_documented_linux_table_is_the_generated_one() -> None:
    from pappus.engines.linux.policy import table_markdown

    assert documented("linux-engine.md", "policy table") == table_markdown(), (
        "docs/linux-engine.md is stale: paste table_markdown() between the markers")
