"""ONNX export: input ``images``, output ``logits``, a symbolic batch axis, metadata in ``metadata_props``.

Exporter choice. torch 2.14 offers the dynamo exporter (``torch.onnx.export(dynamo=True)``, built on
``torch.export``) and the legacy TorchScript-based one (``dynamo=False``). Trying both on these ResNets at
opset 18 (resnet18 64 px and resnet50 224 px, 2 CPU cores): both keep the batch axis symbolic ("batch")
and both match PyTorch to ~1e-6 in ONNX Runtime; the legacy one exports resnet50 in ~7 s against ~10 s
(including save) for dynamo, but it warns that it "will be removed", and dynamo's graph is smaller
(49 against 65 nodes for resnet18: constants folded by its optimiser). We use dynamo: a few seconds
are worth a path that upstream maintains. Its ``dynamic_shapes`` also fail loudly at export when the
batch axis would be specialised, where the legacy ``dynamic_axes`` could silently lose it.

Below opset 18 the dynamo exporter can only export at 18 and down-convert, and for these models the
conversion fails (ReduceMean/Squeeze axes), after which it quietly keeps opset 18. For ``opset < 18`` we
therefore use the legacy exporter, which writes older opsets natively, and every file's real opset is
checked against the one asked for.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from .metadata import INPUT_NAME, OUTPUT_NAME, to_onnx_props

__all__ = ["export_onnx", "DEFAULT_OPSET", "MIN_OPSET", "MAX_OPSET"]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
# The range that exports and passes the gate, measured with torch 2.14 and onnxruntime 1.31 on these ResNets:
# below 9 the legacy exporter turns every weight into a graph input (the interface check refuses it), and
# onnxruntime 1.31 cannot load a model above opset 26.
MIN_OPSET, MAX_OPSET = 9, 26


def export_onnx(
    model: torch.nn.Module, path: Path, example: torch.Tensor, metadata: dict[str, Any], opset: int = DEFAULT_OPSET
) -> dict[str, Any]:
    """Write ``model`` (in eval mode) to ``path`` as one self-contained ONNX file; return facts for the manifest."""
    import onnx

    if opset >= DEFAULT_OPSET:
        batch = torch.export.Dim("batch", min=1)
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({0: batch},),
            verbose=False,  # the dynamo exporter otherwise prints its progress to stdout
        )
        proto = program.model_proto
        exporter = "torch.onnx.export(dynamo=True)"
    else:
        proto = _export_legacy(model, example, opset)
        exporter = "torch.onnx.export(dynamo=False)"
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise ValueError(f"asked for opset {opset}, the exporter wrote opset {written}; choose --opset {written}.")
    for key, value in to_onnx_props(metadata).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"{metadata['architecture']} exported by resnetzoo; preprocessing and labels in metadata_props."
    # One file rather than .onnx + .onnx.data: every registered ResNet is far below protobuf's 2 GB limit,
    # and a single file cannot lose its weights on the way to a server.
    onnx.save_model(proto, str(path))
    return {"opset": opset, "ir_version": int(proto.ir_version), "exporter": exporter}


def _export_legacy(model: torch.nn.Module, example: torch.Tensor, opset: int) -> Any:
    import io

    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Upstream's notice that this exporter is deprecated: we chose it on purpose for old opsets (see above).
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        torch.onnx.export(
            model, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
            dynamo=False, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return onnx.load_from_string(buffer.getvalue())
