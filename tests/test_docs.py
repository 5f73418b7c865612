"""Docs that are generated or promised must stay true."""

from __future__ import annotations

import re
import runpy
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from resnetzoo.parity import models_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_models_doc_is_generated_from_the_registry():
    # Regenerate with: python -m resnetzoo.parity --markdown > docs/models.md
    assert (ROOT / "docs" / "models.md").read_text() == models_markdown()


def test_api_reference_is_generated_from_the_docstrings():
    from resnetzoo.apidoc import api_markdown

    # Regenerate with: make docs (python -m resnetzoo.apidoc > docs/api.md)
    assert (ROOT / "docs" / "api.md").read_text() == api_markdown()


def test_readme_shows_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


# ----------------------------------------------------------------------------- commands shown in the docs



# Hand-written docs; the generated ones (api.md, models.md) are checked against their generators above.
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "export" / "README.md",
                    ROOT / "benchmarks" / "README.md"])
DOC_FILES = [path for path in DOC_FILES if path.name not in {"api.md", "models.md"}]
_FENCE = re.compile(r"```([a-zA-Z]*)\n(.*?)```", re.DOTALL)


def _code_blocks(languages: set[str]) -> list[tuple[Path, str]]:
    blocks = []
    for path in DOC_FILES:
        if path.is_file():
            blocks += [(path, body) for language, body in _FENCE.findall(path.read_text()) if language in languages]
    return blocks


def _shell_commands() -> list[tuple[Path, str]]:
    commands = []
    for path, body in _code_blocks({"bash", "sh", "shell", "console", ""}):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line and not line.startswith("#"):
                commands.append((path, line.split(" #")[0].strip()))
    return commands


def _entry_points() -> tuple[set[str], set[str], set[str]]:
    """Modules (python -m / torchrun -m), repository scripts and make targets that the docs tell people to run."""
    modules, scripts, targets = set(), set(), set()
    for _, command in _shell_commands():
        try:
            words = shlex.split(command)
        except ValueError:
            continue
        if not words:
            continue
        program = Path(words[0]).name
        if program in {"python", "python3", "torchrun"} and "-m" in words:
            module = words[words.index("-m") + 1]
            if module.startswith("resnetzoo"):
                modules.add(module)
        elif program in {"python", "python3"} and len(words) > 1 and words[1].endswith(".py"):
            # Scripts are shown from the repository root, or from their own folder ("python triton_repository.py").
            found = [f"{folder}{words[1]}" for folder in ("", "export/", "benchmarks/") if (ROOT / folder / words[1]).is_file()]
            scripts.update(found[:1])
        elif program == "make" and len(words) > 1:
            targets.add(words[1])
    return modules, scripts, targets


MODULES, SCRIPTS, MAKE_TARGETS = _entry_points()


def test_docs_show_the_main_commands():
    assert {"resnetzoo.train", "resnetzoo.predict", "resnetzoo.export", "resnetzoo.weights", "resnetzoo.demo"} <= MODULES
    assert {"export/predict_onnx.py", "export/triton_repository.py", "benchmarks/throughput.py",
            "benchmarks/train_throughput.py"} <= SCRIPTS
    assert {"demo", "test", "docs"} <= MAKE_TARGETS
    assert "resnetzoo.parity" in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_command_in_the_docs_has_a_working_help(module, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    # runpy warns when the module was imported before (by another test); harmless for --help.
    with pytest.raises(SystemExit) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert caught.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_script_in_the_docs_has_a_working_help(script):
    result = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.mark.parametrize("target", sorted(MAKE_TARGETS))
def test_every_make_target_in_the_docs_exists(target):
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), f"make {target} is documented but not defined"


@pytest.mark.parametrize(("path", "block"), _code_blocks({"python"}), ids=lambda value: getattr(value, "name", None))
def test_every_python_block_in_the_docs_is_valid_python(path, block):
    compile(block, str(path), "exec")
