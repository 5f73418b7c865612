"""``python -m resnetzoo.export``: documented options, a verified export from a saved folder, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from resnetzoo.config import ModelConfig, build_model
from resnetzoo.export import onnx as onnx_export
from resnetzoo.export.__main__ import EXIT_GATE_FAILED, EXIT_OK, EXIT_USAGE, main

REPO = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A small trained-run-like folder (save_pretrained format) at 32 px."""
    torch.manual_seed(0)
    config = ModelConfig(
        architecture=None, num_classes=2, num_layers=[1, 1, 1, 1], class_names=["no", "yes"],
        eval_transform={"resize_size": 36, "crop_size": 32, "mean": [0.485, 0.456, 0.406],
                        "std": [0.229, 0.224, 0.225], "interpolation": "bilinear"},
    )
    return build_model(config).save_pretrained(tmp_path_factory.mktemp("run") / "run")


def test_help_documents_every_option_format_and_exit_status(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in ("SOURCE", "--out", "--formats", "--num-classes", "--pretrained", "--image-size", "--opset",
                   "--fp16", "--no-verify", "--verify-inputs", "--quiet"):
        assert option in text, option
    for word in ("onnx", "torchscript", "exported", "manifest.json", "max|diff| <= 1e-4", "exit status"):
        assert word in text, word


def test_cli_exports_a_saved_folder_and_prints_the_verification_table(run_folder, tmp_path, capsys):
    out = tmp_path / "exported"
    code = main([str(run_folder), "--out", str(out), "--formats", "onnx", "pt2", "--verify-inputs", "4"])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert "onnxruntime CPU, batch 4: max|diff| vs PyTorch" in captured.out
    assert "torch.export.load, batch 1: max|diff| vs PyTorch" in captured.out
    assert "FAILED" not in captured.out
    assert "Wrote 2 file(s) and manifest.json" in captured.out
    assert (captured.out + captured.err).count("Wrote") == 1  # once, after the table: not also logged before it
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["name"] for f in manifest["files"]] == ["model.onnx", "model.pt2"]
    assert manifest["verification"]["passed"] is True and manifest["verification"]["batch_sizes"] == [1, 4]
    props = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert json.loads(props["class_names"]) == ["no", "yes"]


def test_no_verify_writes_unproven_files_and_says_so(run_folder, tmp_path, capsys):
    code = main([str(run_folder), "--out", str(tmp_path), "--formats", "torchscript", "--no-verify"])
    assert code == EXIT_OK
    assert "unproven" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["verification"]["enabled"] is False and manifest["verification"]["passed"] is None
    assert manifest["files"][0]["verified"] is False and manifest["files"][0]["checks"] == []


def test_a_failed_gate_exits_1_naming_the_check_and_the_amount(run_folder, tmp_path, capsys, monkeypatch):
    original = onnx_export.export_onnx

    def export_then_corrupt(model, path, *args, **kwargs):
        details = original(model, path, *args, **kwargs)
        proto = onnx.load(str(path))
        weight = next(t for t in proto.graph.initializer if onnx.numpy_helper.to_array(t).size > 16)
        weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * np.float32(1.5), weight.name))
        onnx.save_model(proto, str(path))
        return details

    monkeypatch.setattr(onnx_export, "export_onnx", export_then_corrupt)
    code = main([str(run_folder), "--out", str(tmp_path / "out"), "--formats", "onnx", "--verify-inputs", "4"])
    err = capsys.readouterr().err
    assert code == EXIT_GATE_FAILED
    assert "error: Export refused" in err
    assert "max|diff| vs PyTorch FAILED" in err and "(limit <= 1e-04)" in err
    assert not (tmp_path / "out" / "model.onnx").exists() and not (tmp_path / "out" / "manifest.json").exists()


def _bad_argument_cases(tmp_path: Path, run_folder: Path) -> dict[str, list[str]]:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    out = str(tmp_path / "out")
    return {
        "unknown model": ["resnet05", "--out", out],
        "missing folder": [str(tmp_path / "no_such_run"), "--out", out],
        "source is a file": [str(a_file), "--out", out],
        "unwritable output": [str(run_folder), "--out", str(a_file / "sub")],
        "unknown format": [str(run_folder), "--out", out, "--formats", "tflite"],
        "bad opset": [str(run_folder), "--out", out, "--opset", "2"],
        "opset not a number": [str(run_folder), "--out", out, "--opset", "x"],
        "bad image size": [str(run_folder), "--out", out, "--image-size", "4"],
        "pretrained with a folder": [str(run_folder), "--out", out, "--pretrained"],
        "pretrained weights unavailable offline": ["resnet18", "--out", out, "--pretrained"],
        "missing --out": [str(run_folder)],
    }


@pytest.mark.parametrize("case", [
    "unknown model", "missing folder", "source is a file", "unwritable output", "unknown format", "bad opset",
    "opset not a number", "bad image size", "pretrained with a folder", "pretrained weights unavailable offline",
    "missing --out",
])
def test_bad_arguments_exit_2_with_one_clear_line(case, run_folder, tmp_path, capsys):
    argv = _bad_argument_cases(tmp_path, run_folder)[case]
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse's own errors exit from parse_args
        code = exited.code
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_unsupported_opset_exits_2_with_one_line_naming_the_supported_range(run_folder, tmp_path, capsys):
    code = main([str(run_folder), "--out", str(tmp_path / "out"), "--formats", "onnx", "--opset", "7"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.strip().splitlines() == [
        f"error: opset must be an integer from {onnx_export.MIN_OPSET} to {onnx_export.MAX_OPSET} (default 18), got 7."
    ]


def test_module_entry_point_prints_no_traceback_for_a_bad_name(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.run(
        [sys.executable, "-m", "resnetzoo.export", "resnet05", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )
    assert process.returncode == EXIT_USAGE
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Unknown model 'resnet05'. Did you mean: resnet50")
    assert process.stdout == ""


def test_docs_describe_every_command_line_option():
    from resnetzoo.export.__main__ import build_parser

    docs = (REPO / "docs" / "export.md").read_text()
    options = [o for action in build_parser()._actions for o in action.option_strings if o.startswith("--")]
    missing = [o for o in options if o != "--help" and f"`{o}" not in docs]
    assert not missing, f"docs/export.md does not describe {missing}"
