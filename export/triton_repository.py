#!/usr/bin/env python3
"""Lay out a Triton Inference Server model repository for an ONNX file exported by resnetzoo.

Uses only onnxruntime and the standard library: the input/output names, shapes, dtypes and class names
all come from the ONNX file itself.

    python triton_repository.py exported/flowers/model.onnx --repository model_repository --name flowers

writes::

    model_repository/flowers/config.pbtxt     # onnxruntime backend, dynamic batching, labels
    model_repository/flowers/labels.txt       # one class name per line, in logit order
    model_repository/flowers/1/model.onnx     # a copy of the file

Then: ``tritonserver --model-repository=model_repository``. Triton does not preprocess images: clients send
``images`` already resized, cropped and normalised as the metadata says (see README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

__all__ = ["triton_config", "write_repository", "main"]

_TRITON_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16"}


# Triton model names become a folder and a quoted string in config.pbtxt: keep them to characters safe in both.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")


def _check_name(name: str) -> None:
    if not _NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"Invalid model name {name!r}: Triton uses it as a folder name, so use only letters, digits, "
                         "'_', '.' and '-' (not '.' or '..'), e.g. --name flowers.")


def _open(model_path: str | os.PathLike) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def _class_names(session: ort.InferenceSession, model_path: str | os.PathLike) -> list[str]:
    props = session.get_modelmeta().custom_metadata_map
    if "class_names" not in props:
        raise ValueError(f"{model_path} has no resnetzoo metadata; export it with python -m resnetzoo.export.")
    class_names = [str(label) for label in json.loads(props["class_names"])]
    for index, label in enumerate(class_names):
        # labels.txt holds one name per line: a line break would shift every later label onto the wrong logit.
        if "\n" in label or "\r" in label:
            raise ValueError(f"{model_path}: class name {index} ({label!r}) contains a line break, which would shift "
                             "labels.txt. Rename that class in model.config.class_names and export again.")
    return class_names


def _config_text(session: ort.InferenceSession, model_path: str | os.PathLike, name: str, max_batch_size: int,
                 gpu: bool) -> str:
    _check_name(name)
    _class_names(session, model_path)
    (model_input,), (model_output,) = session.get_inputs(), session.get_outputs()
    if not isinstance(model_input.shape[0], str):
        raise ValueError(f"{model_path}: the batch axis is fixed at {model_input.shape[0]}; Triton batching needs "
                         "a symbolic one. Export it again with resnetzoo.")
    data_type = _TRITON_TYPES.get(model_input.type)
    if data_type is None:
        raise ValueError(f"{model_path}: unsupported input type {model_input.type}.")
    dims_in = ", ".join(str(d) for d in model_input.shape[1:])
    dims_out = ", ".join(str(d) for d in model_output.shape[1:])
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    # Triton's dims exclude the batch axis when max_batch_size > 0.
    return (
        f'name: "{name}"\n'
        'backend: "onnxruntime"\n'
        f"max_batch_size: {max_batch_size}\n"
        f'input [ {{ name: "{model_input.name}", data_type: {data_type}, dims: [ {dims_in} ] }} ]\n'
        f'output [ {{ name: "{model_output.name}", data_type: {_TRITON_TYPES[model_output.type]}, '
        f'dims: [ {dims_out} ], label_filename: "labels.txt" }} ]\n'
        "dynamic_batching { }\n"
        f"instance_group [ {{ kind: {kind}, count: 1 }} ]\n"
    )


def triton_config(model_path: str | os.PathLike, name: str, max_batch_size: int = 64, gpu: bool = True) -> str:
    """The ``config.pbtxt`` text for ``model_path``; raises ``ValueError`` for files resnetzoo did not export
    and for names Triton cannot use as a folder."""
    return _config_text(_open(model_path), model_path, name, max_batch_size, gpu)


def write_repository(model_path: str | os.PathLike, repository: str | os.PathLike, name: str,
                     max_batch_size: int = 64, gpu: bool = True, version: int = 1) -> Path:
    """Write ``repository/name/{config.pbtxt, labels.txt, <version>/model.onnx}``; returns the model folder."""
    session = _open(model_path)
    config = _config_text(session, model_path, name, max_batch_size, gpu)  # checks everything before any write
    class_names = _class_names(session, model_path)
    folder = Path(repository) / name
    (folder / str(version)).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, folder / str(version) / "model.onnx")
    (folder / "labels.txt").write_text("".join(f"{label}\n" for label in class_names), encoding="utf-8")
    (folder / "config.pbtxt").write_text(config, encoding="utf-8")
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Lay out a Triton model repository for a resnetzoo ONNX export.")
    parser.add_argument("model", help="model.onnx (or model.fp16.onnx) written by python -m resnetzoo.export")
    parser.add_argument("--repository", required=True, help="model repository root (created if missing)")
    parser.add_argument("--name", required=True, help="model name in Triton (letters, digits, _ . -)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="largest batch Triton may form (default 64)")
    parser.add_argument("--cpu", action="store_true", help="run instances on the CPU (default: GPU)")
    parser.add_argument("--version", type=int, default=1, help="version folder (default 1)")
    args = parser.parse_args(argv)
    try:
        folder = write_repository(args.model, args.repository, args.name, args.max_batch_size, not args.cpu,
                                  args.version)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # onnxruntime's own exception types for unreadable files
        print(f"error: cannot read {args.model}: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {folder} (config.pbtxt, labels.txt, {args.version}/model.onnx)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
