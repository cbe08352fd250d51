"""The policy tables in docs/ are exactly the ones the code generates."""

from __future__ import annotations

from pathlib import Path

from pappus.engines.process.policy import policy_markdown, runner_calls_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "process-engine.md"


def test_the_documented_policy_table_is_the_generated_one() -> None:
    text = DOC.read_text()
    begin, end = "<!-- policy table: begin -->\n", "<!-- policy table: end -->"
    documented = text[text.index(begin) + len(begin):text.index(end)]
    assert documented == policy_markdown(), (
        "docs/process-engine.md is stale: paste policy_markdown() between the markers")


def test_the_documented_runner_calls_are_the_generated_ones() -> None:
    text = DOC.read_text()
    begin, end = "<!-- runner calls table: begin -->\n", "<!-- runner calls table: end -->"
    documented = text[text.index(begin) + len(begin):text.index(end)]
    assert documented == runner_calls_markdown(), (
        "docs/process-engine.md is stale: paste runner_calls_markdown() between the markers")


def test_the_documented_linux_table_is_the_generated_one() -> None:
    from pappus.engines.linux.policy import table_markdown

    text = (DOC.parent / "linux-engine.md").read_text()
    begin, end = "<!-- policy table: begin -->\n", "<!-- policy table: end -->"
    documented = text[text.index(begin) + len(begin):text.index(end)]
    assert documented == table_markdown(), (
        "docs/linux-engine.md is stale: paste table_markdown() between the markers")
