"""Writes docs/api.md, the API reference, from the public names' signatures and docstrings.

``python -m resnetzoo.apidoc > docs/api.md`` (``make docs``). A test keeps the committed file equal
to this output, so the reference cannot drift from the code. Plain Markdown on purpose: it reads on
any Git host and needs no site generator.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

__all__ = ["API_SECTIONS", "api_markdown"]

# (module, public names) in the order a newcomer meets them.
API_SECTIONS: list[tuple[str, list[str]]] = [
    ("resnetzoo", ["create", "list_models", "ResNet", "BasicBlock", "Bottleneck", "ModelConfig", "build_model",
                   "optimize_for_inference"]),
    ("resnetzoo.data", ["load_splits", "ImageFolderSplit", "load_image", "scan_image_folder"]),
    ("resnetzoo.train", ["Trainer", "TrainConfig"]),
    ("resnetzoo.predict", ["predict", "draw_prediction_grid"]),
    ("resnetzoo.transforms", ["eval_transform", "train_transform"]),
    ("resnetzoo.hub", ["save_pretrained", "load_pretrained", "push_to_hub", "HubError"]),
    ("resnetzoo.export", ["export_model"]),
    ("resnetzoo.weights", ["weights_records", "resolve_pretrained", "fetch_weights", "cache_dir", "load_state_dict_file",
                           "fit_state_dict"]),
    ("resnetzoo.profile", ["count_parameters", "count_macs"]),
    ("resnetzoo.errors", ["ResnetzooError", "UnknownModelError", "UnknownWeightsError", "WeightsFileError",
                          "WeightsHashMismatchError", "WeightsUnavailableError", "StateDictMismatchError",
                          "ModelSourceError"]),
    # Raised by its own module, and a ResnetzooError like every error above (as is hub.HubError).
    ("resnetzoo.config", ["ConfigError"]),
]


def _default(value: Any) -> str:
    if inspect.isclass(value) or inspect.isfunction(value):
        return value.__name__
    return repr(value)


def _signature(obj: Any) -> str:
    """``(name: type = default, ...)`` with annotations as written in the source (they are strings here)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    parts = []
    for parameter in signature.parameters.values():
        if parameter.name == "self":
            continue
        text = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        text += parameter.name
        if parameter.annotation is not inspect.Parameter.empty:
            annotation = parameter.annotation
            text += f": {annotation if isinstance(annotation, str) else getattr(annotation, '__name__', annotation)}"
        if parameter.default is not inspect.Parameter.empty:
            text += f" = {_default(parameter.default)}"
        parts.append(text)
    result = f"({', '.join(parts)})"
    returns = signature.return_annotation
    if returns is not inspect.Signature.empty and returns != "None":
        result += f" -> {returns if isinstance(returns, str) else getattr(returns, '__name__', returns)}"
    return result


_SECTIONS = ("Args:", "Returns:", "Raises:", "Yields:", "Example:", "Examples:")


def _docstring_markdown(doc: str) -> str:
    """Google-style sections become bold headings with bullet lists; the rest stays as written."""
    out: list[str] = []
    in_section = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in _SECTIONS:
            in_section = True
            out += ["", f"**{stripped[:-1]}**", ""]
        elif in_section and line.startswith("    ") and not line.startswith("        ") and stripped:
            name, sep, rest = stripped.partition(": ")
            out.append(f"- `{name}`: {rest}" if sep and " " not in name.strip(", ") else f"- {stripped}")
        elif in_section and line.startswith("        "):
            out[-1] += " " + stripped
        else:
            in_section = in_section and bool(stripped)
            out.append(line)
    return "\n".join(out).strip()


def _entry(module_name: str, name: str, obj: Any) -> list[str]:
    kind = "class" if inspect.isclass(obj) else "def"
    lines = [f"### `{module_name}.{name}`", "", f"```python\n{kind} {name}{_signature(obj)}\n```", ""]
    doc = inspect.getdoc(obj)
    if doc:
        lines += [_docstring_markdown(doc), ""]
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        for method_name, method in inspect.getmembers(obj, inspect.isfunction):
            if method_name.startswith("_") or method.__qualname__.split(".")[0] != obj.__name__:
                continue
            method_doc = inspect.cleandoc(method.__doc__ or "")  # its own doc, not one inherited from nn.Module
            if method_doc:
                first_paragraph = method_doc.split("\n\n")[0].replace("\n", " ")
                lines.append(f"- `{method_name}{_signature(method)}`: {first_paragraph}")
        lines.append("")
    return lines


def api_markdown() -> str:
    lines = [
        "# API reference",
        "",
        "<!-- Generated by `python -m resnetzoo.apidoc` (make docs); tests/test_docs.py keeps it current. -->",
        "",
        "The public API, section by section. Every user-facing failure raises a subclass of",
        "`resnetzoo.ResnetzooError` whose message says the cause and the fix.",
        "",
    ]
    for module_name, names in API_SECTIONS:
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", ""]
        summary = (inspect.getdoc(module) or "").split("\n\n")[0]
        if summary:
            lines += [summary, ""]
        for name in names:
            lines += _entry(module_name, name, getattr(module, name))
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(api_markdown())
