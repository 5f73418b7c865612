"""Docs that are generated or promised must stay true."""

from __future__ import annotations

from pathlib import Path

from resnetzoo.parity import models_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_models_doc_is_generated_from_the_registry():
    # Regenerate with: python -m resnetzoo.parity --markdown > docs/models.md
    assert (ROOT / "docs" / "models.md").read_text() == models_markdown()


def test_readme_shows_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
