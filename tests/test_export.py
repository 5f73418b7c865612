"""resnetzoo.export: every format reloads to PyTorch's outputs, carries its metadata, and bad exports are refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from images import write_color_classes

import resnetzoo
import resnetzoo.export as export_package
from resnetzoo.config import ModelConfig, build_model
from resnetzoo.export import (
    MANIFEST_NAME,
    ExportError,
    ExportVerificationError,
    export_model,
    file_name,
)
from resnetzoo.export import onnx as onnx_export
from resnetzoo.export.metadata import resolve_class_names
from resnetzoo.export.program import load_program
from resnetzoo.export.torchscript import export_torchscript, load_torchscript
from resnetzoo.export.verify import make_reference, verification_inputs, verify_file

IMAGE_SIZE = 32
CLASS_NAMES = ["cat", "dog", "eel"]


def tiny_model(seed: int = 0, class_names: list[str] | None = CLASS_NAMES) -> resnetzoo.ResNet:
    """A one-block-per-stage ResNet with a config, as create() would attach, at 32 px."""
    torch.manual_seed(seed)
    config = ModelConfig(
        architecture=None, num_classes=3, num_layers=[1, 1, 1, 1], class_names=class_names,
        eval_transform={"resize_size": 36, "crop_size": IMAGE_SIZE, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3],
                        "interpolation": "bilinear"},
        base_weights="run.safetensors", base_weights_sha256="ab" * 32,
    )
    model = build_model(config)
    # Non-trivial BatchNorm statistics, so that eval mode (running stats) differs from train mode.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One fp32 export of the tiny model to all three formats, shared by the read-only tests below."""
    model = tiny_model()
    out = tmp_path_factory.mktemp("exported")
    manifest = export_model(model, out, progress=False)
    return model, out, manifest


def fresh_inputs(batch: int, seed: int = 123) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


@torch.no_grad()
def eval_logits(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    model.eval()
    try:
        return model(inputs).numpy()
    finally:
        model.train()


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_file_matches_pytorch_in_onnxruntime_at_any_batch_size(exported, batch):
    model, out, _ = exported
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = fresh_inputs(batch)
    (logits,) = session.run(["logits"], {"images": inputs.numpy()})
    np.testing.assert_allclose(logits, eval_logits(model, inputs), rtol=0, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 5])
def test_torchscript_file_matches_pytorch_at_any_batch_size(exported, batch):
    model, out, _ = exported
    module, _ = load_torchscript(out / "model.torchscript.pt")
    inputs = fresh_inputs(batch)
    with torch.no_grad():
        np.testing.assert_allclose(module(inputs).numpy(), eval_logits(model, inputs), rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 5])
def test_pt2_program_matches_pytorch_at_any_batch_size(exported, batch):
    model, out, _ = exported
    program = torch.export.load(str(out / "model.pt2")).module()
    inputs = fresh_inputs(batch)
    with torch.no_grad():
        np.testing.assert_allclose(program(inputs).numpy(), eval_logits(model, inputs), rtol=0, atol=1e-5)


def test_onnx_graph_declares_symbolic_batch_axis_and_named_io(exported):
    _, out, _ = exported
    graph = onnx.load(str(out / "model.onnx")).graph
    assert [v.name for v in graph.input] == ["images"]
    assert [v.name for v in graph.output] == ["logits"]
    input_dims = graph.input[0].type.tensor_type.shape.dim
    output_dims = graph.output[0].type.tensor_type.shape.dim
    assert input_dims[0].dim_param and not input_dims[0].HasField("dim_value")
    assert output_dims[0].dim_param == input_dims[0].dim_param
    assert [d.dim_value for d in input_dims[1:]] == [3, IMAGE_SIZE, IMAGE_SIZE]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert onnx.load(str(out / "model.onnx")).opset_import[0].version == 18


def expected_metadata_subset() -> dict:
    return {
        "class_names": CLASS_NAMES, "num_classes": 3, "input_shape": ["batch", 3, IMAGE_SIZE, IMAGE_SIZE],
        "resize_size": 36, "crop_size": IMAGE_SIZE, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3],
        "interpolation": "bilinear", "base_weights": "run.safetensors", "base_weights_sha256": "ab" * 32,
        "input_name": "images", "output_name": "logits", "input_dtype": "float32",
    }


def test_onnx_metadata_props_carry_labels_preprocessing_and_weights_hash(exported):
    _, out, _ = exported
    props = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    json_keys = {"class_names", "num_classes", "input_shape", "resize_size", "crop_size", "mean", "std"}
    decoded = {k: json.loads(v) if k in json_keys else v for k, v in props.items()}
    for key, value in expected_metadata_subset().items():
        assert decoded[key] == value, key
    assert "ResNet(block=BasicBlock, num_layers=[1, 1, 1, 1]" in decoded["architecture"]


def test_torchscript_and_pt2_carry_the_same_metadata_as_extra_files(exported):
    _, out, manifest = exported
    _, ts_meta = load_torchscript(out / "model.torchscript.pt")
    _, pt2_meta = load_program(out / "model.pt2")
    assert ts_meta == pt2_meta == manifest["metadata"]
    for key, value in expected_metadata_subset().items():
        assert ts_meta[key] == value, key


def test_manifest_lists_each_file_with_its_sha256_size_and_passed_checks(exported):
    _, out, manifest = exported
    on_disk = json.loads((out / MANIFEST_NAME).read_text())
    assert on_disk == manifest
    assert [f["name"] for f in manifest["files"]] == ["model.onnx", "model.torchscript.pt", "model.pt2"]
    for entry in manifest["files"]:
        data = (out / entry["name"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["size_bytes"] == len(data)
        assert entry["verified"] is True
        checks = {c["check"] for c in entry["checks"]}
        assert all(c["passed"] for c in entry["checks"])
        assert "metadata" in checks
        # Two batch sizes per runtime: a batch axis fixed at export would fail one of them.
        assert any("batch 1:" in c for c in checks) and any("batch 32:" in c for c in checks)
    onnx_entry = manifest["files"][0]
    assert onnx_entry["opset"] == 18
    assert {"onnx.checker (full_check)", "interface"} <= {c["check"] for c in onnx_entry["checks"]}
    assert manifest["verification"]["passed"] is True
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["versions"]["onnxruntime"] == ort.__version__


def test_export_leaves_only_the_files_and_the_manifest(exported):
    _, out, _ = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", "model.onnx", "model.torchscript.pt",
                                                            "model.pt2"])


def test_export_does_not_modify_the_callers_model(tmp_path):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(model, tmp_path, formats=["torchscript"], fp16=True, progress=False)
    assert model.training
    assert all(v.dtype == before[k].dtype and torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_fp16_export_takes_and_returns_float16_and_passes_the_agreement_gate(tmp_path):
    model = tiny_model()
    manifest = export_model(model, tmp_path, formats=["onnx"], fp16=True, progress=False)
    path = tmp_path / file_name("onnx", fp16=True)
    assert path.name == "model.fp16.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    assert session.get_outputs()[0].type == "tensor(float16)"
    inputs = fresh_inputs(8)
    (logits,) = session.run(["logits"], {"images": inputs.half().numpy()})
    assert logits.dtype == np.float16 and np.isfinite(logits).all()
    assert (logits.astype(np.float32).argmax(1) == eval_logits(model, inputs).argmax(1)).mean() >= 0.99
    checks = manifest["files"][0]["checks"]
    agreement = [c for c in checks if "top-1 agreement" in c["check"]]
    assert agreement and all(c["passed"] and c["limit"] == ">= 99%" for c in agreement)
    assert "onnxruntime CPU, batch 32: float16 outputs, NaN/Inf" in {c["check"] for c in checks}
    assert manifest["metadata"]["input_dtype"] == "float16"


def test_fp16_gate_refuses_a_model_whose_logits_overflow_float16(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.fc.weight.mul_(1e6)  # fp32 logits ~1e5..1e6: fine in fp32, Inf in fp16 (max 65504)
    with pytest.raises(ExportVerificationError) as caught:
        export_model(model, tmp_path / "out", formats=["onnx"], fp16=True, progress=False)
    failed = [r for r in caught.value.results if not r.passed]
    assert any("NaN/Inf" in r.check and r.measured > 0 for r in failed)
    assert not (tmp_path / "out").exists()  # the folder it created is gone again, with every temporary file


def _perturb_first_initializer(path) -> None:
    proto = onnx.load(str(path))
    for tensor in proto.graph.initializer:
        array = onnx.numpy_helper.to_array(tensor)
        if array.dtype == np.float32 and array.size > 16:
            tensor.CopyFrom(onnx.numpy_helper.from_array(array + np.float32(0.05), tensor.name))
            break
    onnx.save_model(proto, str(path))


def test_a_file_broken_after_export_fails_the_gate_and_the_last_good_export_survives(exported, tmp_path, monkeypatch):
    model, good, _ = exported
    out = tmp_path / "out"
    shutil.copytree(good, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    original = onnx_export.export_onnx

    def export_then_corrupt(*args, **kwargs):
        details = original(*args, **kwargs)
        _perturb_first_initializer(args[1])
        return details

    monkeypatch.setattr(onnx_export, "export_onnx", export_then_corrupt)
    with pytest.raises(ExportVerificationError) as caught:
        export_model(model, out, formats=["onnx"], progress=False)
    message = str(caught.value)
    assert "model.onnx: onnxruntime CPU, batch 1: max|diff| vs PyTorch FAILED" in message
    failed = next(r for r in caught.value.results if not r.passed)
    assert failed.measured > 1e-4 and failed.limit == "<= 1e-04"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing replaced, no temporary left


def test_a_manifest_that_cannot_be_written_leaves_the_previous_export_intact(exported, tmp_path, monkeypatch):
    _, good, _ = exported
    out = tmp_path / "out"
    shutil.copytree(good, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    original = export_package._manifest

    def unserialisable_manifest(*args, **kwargs):
        return {**original(*args, **kwargs), "broken": object()}  # json.dumps fails, as a full disk would

    monkeypatch.setattr(export_package, "_manifest", unserialisable_manifest)
    with pytest.raises(TypeError):
        export_model(tiny_model(seed=1), out, formats=["onnx", "torchscript"], progress=False)
    # Different weights, so a model file renamed before the manifest failed would show up here.
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing replaced, no temporary left


def test_exported_files_and_manifest_get_the_permissions_open_would_give(exported):
    _, out, _ = exported
    umask = os.umask(0)
    os.umask(umask)
    for path in out.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name


@pytest.mark.parametrize("kind, name", [("onnx", "model.onnx"), ("torchscript", "model.torchscript.pt"),
                                        ("exported", "model.pt2")])
def test_verify_file_reports_a_model_that_differs_from_the_file_by_how_much(exported, kind, name):
    model, out, manifest = exported
    other = tiny_model(seed=1)  # same shape, different weights
    metadata = manifest["metadata"]
    reference = make_reference(other, verification_inputs(3, IMAGE_SIZE, metadata["mean"], metadata["std"], count=4))
    results = verify_file(out / name, kind, reference, metadata)
    failed = [r for r in results if not r.passed]
    assert failed and all("max|diff|" in r.check and r.measured > 1e-4 for r in failed)
    same = verify_file(out / name, kind, make_reference(model, reference.inputs), metadata)
    assert all(r.passed for r in same)


def test_verify_file_reports_wrong_metadata(exported):
    model, out, manifest = exported
    metadata = {**manifest["metadata"], "class_names": ["a", "b", "c"]}
    reference = make_reference(model, verification_inputs(3, IMAGE_SIZE, metadata["mean"], metadata["std"], count=2))
    row = next(r for r in verify_file(out / "model.onnx", "onnx", reference, metadata) if r.check == "metadata")
    assert not row.passed and "class_names" in row.value


def test_verify_file_turns_an_unreadable_file_into_a_failed_load_check(tmp_path, exported):
    model, _, manifest = exported
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not a model")
    reference = make_reference(model, verification_inputs(3, IMAGE_SIZE, [0.5] * 3, [0.2] * 3, count=2))
    for kind in ("onnx", "torchscript", "exported"):
        (row,) = verify_file(broken, kind, reference, manifest["metadata"])
        assert row.check == "load" and not row.passed and row.value


def test_export_from_a_saved_folder_rebuilds_the_model_and_its_labels(tmp_path):
    model = tiny_model(seed=2)
    folder = model.save_pretrained(tmp_path / "run")
    manifest = export_model(folder, tmp_path / "out", formats=["exported"], progress=False)
    assert manifest["source"] == str(folder)
    program, metadata = load_program(tmp_path / "out" / "model.pt2")
    assert metadata["class_names"] == CLASS_NAMES
    inputs = fresh_inputs(3)
    with torch.no_grad():
        np.testing.assert_allclose(program(inputs).numpy(), eval_logits(model, inputs), rtol=0, atol=1e-5)


def test_export_of_pretrained_name_records_weights_hash_imagenet_labels_and_scaled_resize(tmp_path,
                                                                                         fake_published_weights):
    record, payload = fake_published_weights("resnet18")
    manifest = export_model("resnet18", tmp_path, formats=["exported"], pretrained=True, image_size=IMAGE_SIZE,
                            progress=False)
    metadata = manifest["metadata"]
    assert metadata["architecture"] == "resnet18"
    assert metadata["base_weights"] == record.full_name
    assert metadata["base_weights_sha256"] == hashlib.sha256(payload).hexdigest()
    assert metadata["class_names"] == list(record.categories) and len(metadata["class_names"]) == 1000
    transform = record.eval_transform_config()
    assert metadata["crop_size"] == IMAGE_SIZE
    assert metadata["resize_size"] == round(IMAGE_SIZE * transform["resize_size"] / transform["crop_size"])
    assert metadata["mean"] == transform["mean"] and metadata["std"] == transform["std"]


def test_class_names_fall_back_to_imagenet_categories_then_to_numbered_names(fake_published_weights):
    record, _ = fake_published_weights("resnet18", cached=False)
    imagenet = ModelConfig(architecture="resnet18", num_classes=1000, base_weights=record.full_name)
    assert resolve_class_names(imagenet) == list(record.categories)
    new_head = ModelConfig(architecture="resnet18", num_classes=4, base_weights=record.full_name)
    assert resolve_class_names(new_head) == ["class_0", "class_1", "class_2", "class_3"]


def test_torchscript_export_hides_upstream_deprecation_warnings_and_points_to_pt2(tmp_path, caplog):
    model = tiny_model().eval()
    # Re-arm the once-per-process pointer so that this test sees it whatever ran before.
    import resnetzoo.export.torchscript as torchscript_module

    torchscript_module._pointer_logged = False
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("INFO", logger="resnetzoo.export"):
        warnings.simplefilter("always")
        export_torchscript(model, tmp_path / "m.pt", {"a": 1})
        load_torchscript(tmp_path / "m.pt")
    assert not [w for w in caught if "torch.jit" in str(w.message)]
    assert any(".pt2" in r.getMessage() for r in caplog.records)
    # The filter must be scoped to our calls: the same warning raised afterwards (as torch does for the user's
    # own torch.jit.script) still reaches the user.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        export_torchscript(model, tmp_path / "m2.pt", {"a": 1})
        warnings.warn("`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.",
                      FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught if "torch.jit" in str(w.message)] == [
        "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`."]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"formats": ["onnx", "tflite"]}, "Unknown export format 'tflite'"),
        ({"formats": []}, "No export format"),
        ({"opset": 3}, "opset must be"),
        ({"image_size": 8}, "image_size must be"),
        ({"num_verify_inputs": 1}, "num_verify_inputs"),
    ],
)
def test_bad_arguments_raise_export_error_before_any_work(tmp_path, kwargs, match):
    with pytest.raises(ExportError, match=match):
        export_model(tiny_model(), tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_bad_sources_and_outputs_raise_clear_errors(tmp_path):
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(ExportError, match="is a file, not a folder saved by resnetzoo"):
        export_model(a_file, tmp_path / "out")
    with pytest.raises(ExportError, match="No such folder"):
        export_model(str(tmp_path / "missing_run"), tmp_path / "out")
    with pytest.raises(resnetzoo.UnknownModelError, match="Did you mean"):
        export_model("resnet05", tmp_path / "out")
    with pytest.raises(ExportError, match="is not a writable folder"):
        export_model(tiny_model(), a_file / "out")
    with pytest.raises(ExportError, match="is a file, not a folder"):
        export_model(tiny_model(), a_file)
    folder = tiny_model().save_pretrained(tmp_path / "run")
    with pytest.raises(ExportError, match="drop --pretrained"):
        export_model(folder, tmp_path / "out", pretrained=True)
    replaced_head = tiny_model()
    replaced_head.fc = torch.nn.Linear(replaced_head.num_features, 5)  # swapped by hand: config still says 3
    with pytest.raises(ExportError, match="head has 5 classes but model.config says 3"):
        export_model(replaced_head, tmp_path / "out")
    headless = build_model(ModelConfig(architecture=None, num_classes=0, num_layers=[1, 1, 1, 1]))
    with pytest.raises(ExportError, match="no classifier head"):
        export_model(headless, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.gpu
def test_onnx_gate_also_runs_onnxruntime_cuda_when_a_gpu_is_present(tmp_path):
    manifest = export_model(tiny_model(), tmp_path, formats=["onnx"], progress=False)
    checks = manifest["files"][0]["checks"]
    cuda = [c for c in checks if c["check"].startswith("onnxruntime CUDA")]
    assert cuda and all(c["passed"] and not c["skipped"] for c in cuda)


def test_export_from_a_training_run_folder(tmp_path):
    from resnetzoo.data import load_splits
    from resnetzoo.train import Trainer

    write_color_classes(tmp_path / "data")
    splits = load_splits(tmp_path / "data", image_size=16, val_fraction=0.25, test_fraction=0.0)
    trainer = Trainer(splits, tiny_model(class_names=None), epochs=1, batch_size=4, lr=1e-3, out_dir=tmp_path / "run",
                      device="cpu", num_workers=0, progress=False, warmup_epochs=0)
    trainer.train()

    manifest = export_model(tmp_path / "run", tmp_path / "out", formats=["onnx"], progress=False)
    metadata = manifest["metadata"]
    assert metadata["class_names"] == ["blue", "green", "red"]
    assert metadata["crop_size"] == 16 and metadata["input_shape"] == ["batch", 3, 16, 16]
    trained = resnetzoo.create(tmp_path / "run").eval()
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"images": inputs.numpy()})[0], trained(inputs).numpy(),
                                   rtol=0, atol=1e-4)


def test_hub_sources_go_to_the_hub_loader_not_to_the_folder_check(tmp_path):
    # HF_HUB_OFFLINE=1 (conftest): the Hub loader's own offline error proves the name reached it.
    with pytest.raises(resnetzoo.ResnetzooError) as caught:
        export_model("hf-hub:someone/flowers", tmp_path / "out", progress=False)
    assert "No such folder" not in str(caught.value) and "hf-hub:someone/flowers" in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.gpu
def test_fp16_onnx_gate_runs_on_onnxruntime_cuda_too(tmp_path):
    manifest = export_model(tiny_model(), tmp_path, formats=["onnx"], fp16=True, progress=False)
    cuda = [c for c in manifest["files"][0]["checks"] if c["check"].startswith("onnxruntime CUDA")]
    assert any("top-1 agreement" in c["check"] for c in cuda)
    assert all(c["passed"] and not c["skipped"] for c in cuda)


@pytest.mark.gpu
def test_a_model_on_the_gpu_is_exported_and_left_on_the_gpu(tmp_path):
    model = tiny_model().cuda()
    manifest = export_model(model, tmp_path, formats=["exported"], progress=False)
    assert manifest["verification"]["passed"] is True
    assert next(model.parameters()).device.type == "cuda"


def test_opset_below_18_is_written_natively_with_a_symbolic_batch_axis(tmp_path):
    model = tiny_model()
    manifest = export_model(model, tmp_path, formats=["onnx"], opset=17, progress=False, num_verify_inputs=4)
    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert manifest["files"][0]["opset"] == 17 and manifest["verification"]["passed"] is True
    assert {p.key for p in proto.metadata_props} >= {"class_names", "mean", "std", "resize_size"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the stand-in below calls the legacy exporter directly
@pytest.mark.parametrize("opset", [onnx_export.MIN_OPSET, onnx_export.MAX_OPSET])
def test_both_ends_of_the_supported_opset_range_export_and_pass_the_gate(opset, tmp_path):
    manifest = export_model(tiny_model(), tmp_path, formats=["onnx"], opset=opset, progress=False, num_verify_inputs=2)
    assert manifest["files"][0]["opset"] == opset and manifest["verification"]["passed"] is True


@pytest.mark.parametrize("opset", [7, onnx_export.MIN_OPSET - 1, onnx_export.MAX_OPSET + 1])
def test_an_opset_outside_the_supported_range_is_refused_before_export_naming_the_range(opset, tmp_path):
    # Opset 7 and 8 used to reach the gate and fail with every weight listed as a graph input.
    expected = f"opset must be an integer from {onnx_export.MIN_OPSET} to {onnx_export.MAX_OPSET}"
    with pytest.raises(ExportError, match=expected):
        export_model(tiny_model(), tmp_path / "out", formats=["onnx"], opset=opset, progress=False)
    assert not (tmp_path / "out").exists()


def test_an_exporter_that_writes_another_opset_than_asked_is_an_error(tmp_path, monkeypatch):
    import io

    def writes_opset_18(model, example, opset):
        buffer = io.BytesIO()
        torch.onnx.export(model, (example,), buffer, opset_version=18, dynamo=False,
                          input_names=["images"], output_names=["logits"])
        return onnx.load_from_string(buffer.getvalue())

    monkeypatch.setattr(onnx_export, "_export_legacy", writes_opset_18)
    with pytest.raises(ExportError, match="asked for opset 17, the exporter wrote opset 18"):
        export_model(tiny_model(), tmp_path / "out", formats=["onnx"], opset=17, progress=False)
    assert not (tmp_path / "out").exists()


def _write_images(folder, count: int, seed: int = 0) -> list:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (40 + index, 50, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_the_gate_can_verify_with_the_users_own_images(tmp_path):
    _write_images(tmp_path / "photos", 3)
    manifest = export_model(tiny_model(), tmp_path / "out", formats=["torchscript"], verify_images=tmp_path / "photos",
                            progress=False)
    verification = manifest["verification"]
    assert verification["num_inputs"] == 3 and verification["batch_sizes"] == [1, 3]
    assert str(tmp_path / "photos") in verification["input_set"]
    checks = [c["check"] for c in manifest["files"][0]["checks"]]
    assert "torch.jit.load, batch 3: max|diff| vs PyTorch" in checks


def test_verify_images_errors_name_the_problem(tmp_path):
    paths = _write_images(tmp_path / "photos", 2)
    with pytest.raises(ExportError, match="needs at least 2"):
        export_model(tiny_model(), tmp_path / "out", verify_images=[paths[0]], progress=False)
    with pytest.raises(ExportError, match="does not exist"):
        export_model(tiny_model(), tmp_path / "out", verify_images=[tmp_path / "nope.jpg"], progress=False)
    assert not (tmp_path / "out").exists()


def test_unreadable_verify_images_are_skipped_with_a_warning_naming_each_file(tmp_path, caplog):
    _write_images(tmp_path / "photos", 2)
    (tmp_path / "photos" / "0_broken.png").write_bytes(b"not a png")
    (tmp_path / "photos" / "1_empty.jpg").write_bytes(b"")
    with caplog.at_level("WARNING", logger="resnetzoo.export"):
        manifest = export_model(tiny_model(), tmp_path / "out", formats=["torchscript"],
                                verify_images=tmp_path / "photos", progress=False)
    assert manifest["verification"]["num_inputs"] == 2
    warnings_ = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("0_broken.png" in w for w in warnings_) and any("1_empty.jpg" in w for w in warnings_)


def test_verify_images_fail_only_when_too_few_usable_images_remain(tmp_path):
    _write_images(tmp_path / "photos", 1)
    (tmp_path / "photos" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ExportError, match=r"1 usable image\(s\) \(1 unreadable file\(s\) skipped\)"):
        export_model(tiny_model(), tmp_path / "out", verify_images=tmp_path / "photos", progress=False)
    assert not (tmp_path / "out").exists()


def test_random_weights_warning_only_for_a_bare_model_name(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="resnetzoo.export"):
        export_model("resnet18", tmp_path / "named", formats=["torchscript"], image_size=IMAGE_SIZE, verify=False,
                     progress=False)
    assert any("randomly initialised" in r.getMessage() for r in caplog.records)
    caplog.clear()
    folder = tiny_model(class_names=None).save_pretrained(tmp_path / "run")  # e.g. a run trained from scratch
    with caplog.at_level("WARNING", logger="resnetzoo.export"):
        export_model(folder, tmp_path / "saved", formats=["torchscript"], verify=False, progress=False)
    assert not any("randomly initialised" in r.getMessage() for r in caplog.records)
