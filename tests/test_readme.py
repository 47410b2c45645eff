"""The README documents every setting and opens with the two commands."""

from __future__ import annotations

from pathlib import Path

from adapters.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [f"PITBOSS_{name.upper()}" for name in Settings.model_fields if f"PITBOSS_{name.upper()}" not in README]
    assert missing == []


def test_the_readme_opens_with_run_and_test() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block
