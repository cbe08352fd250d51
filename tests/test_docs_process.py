"""docs/process-engine.md shows the policy table exactly as the code generates it."""

from __future__ import annotations

from pathlib import Path

from pappus.engines.process.policy import policy_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "process-engine.md"


def test_the_documented_policy_table_is_the_generated_one() -> None:
    text = DOC.read_text()
    begin, end = "<!-- policy table: begin -->\n", "<!-- policy table: end -->"
    documented = text[text.index(begin) + len(begin):text.index(end)]
    assert documented == policy_markdown(), (
        "docs/process-engine.md is stale: paste policy_markdown() between the markers")
