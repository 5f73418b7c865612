"""export/predict_onnx.py: the torch-free predictor reads its preprocessing and labels from the ONNX file alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from scripts import load_module
from torchvision.transforms import InterpolationMode, v2

from resnetzoo.config import ModelConfig, build_model
from resnetzoo.export import export_model

REPO = Path(__file__).resolve().parents[1]
PREDICTOR = REPO / "export" / "predict_onnx.py"
CLASS_NAMES = ["apple", "banana", "cherry", "date"]
EVAL_TRANSFORM = {"resize_size": 40, "crop_size": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                  "interpolation": "bilinear"}

# Run a script with `import torch` made impossible: a meta-path finder that refuses torch and its submodules.
NO_TORCH_SHIM = """
import runpy, sys
class RefuseTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name.startswith("torchvision"):
            raise ImportError(f"{name} is blocked: the predictor must run without torch")
        return None
sys.meta_path.insert(0, RefuseTorch())
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def load_predictor_module():
    return load_module(PREDICTOR, "predict_onnx")



@pytest.fixture(scope="module")
def model_and_onnx(tmp_path_factory, images):
    torch.manual_seed(0)
    config = ModelConfig(architecture=None, num_classes=4, num_layers=[1, 1, 1, 1], class_names=CLASS_NAMES,
                         eval_transform=dict(EVAL_TRANSFORM))
    model = build_model(config).eval()
    # A random head gives every image the same class. Make it a nearest-prototype classifier over four of the
    # test images instead, so that top-1 depends on the image and a preprocessing slip would change it.
    transform = torchvision_eval_transform()
    with torch.no_grad():
        batch = []
        for path in images:
            with Image.open(path) as image:
                batch.append(transform(image.convert("RGB")))
        features = model.forward_head(model.forward_features(torch.stack(batch)), pre_logits=True)
        centred = features - features.mean(dim=0)
        prototypes = centred[:4] / centred[:4].norm(dim=1, keepdim=True)
        model.fc.weight.copy_(prototypes * 10.0)
        model.fc.bias.copy_(-(prototypes * 10.0) @ features.mean(dim=0))
    out = tmp_path_factory.mktemp("onnx")
    export_model(model, out, formats=["onnx"], progress=False, num_verify_inputs=4)
    return model, out / "model.onnx"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Photos-like test images in the modes and shapes people actually have: RGB, greyscale, RGBA, palette."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for index, (width, height, mode) in enumerate([(64, 48, "RGB"), (45, 80, "RGB"), (40, 40, "L"), (90, 41, "RGBA"),
                                                   (33, 57, "P"), (120, 120, "RGB")]):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        noise = rng.integers(-20, 20, (height, width, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int64) + noise, 0, 255).astype(np.uint8))
        image = image.convert(mode)
        path = folder / f"image_{index}.{'jpg' if mode in ('RGB', 'L') else 'png'}"
        image.save(path)
        paths.append(path)
    return paths


def torchvision_eval_transform(interpolation: InterpolationMode = InterpolationMode.BILINEAR) -> v2.Compose:
    """The reference preprocessing: torchvision's transforms v2, built from the same config."""
    return v2.Compose([
        v2.Resize(EVAL_TRANSFORM["resize_size"], interpolation=interpolation, antialias=True),
        v2.CenterCrop(EVAL_TRANSFORM["crop_size"]),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(EVAL_TRANSFORM["mean"], EVAL_TRANSFORM["std"]),
    ])


@pytest.mark.parametrize("interpolation", [InterpolationMode.BILINEAR, InterpolationMode.BICUBIC])
def test_preprocessing_equals_torchvision_transforms_v2(model_and_onnx, images, interpolation):
    predictor = load_predictor_module()
    classifier = predictor.OnnxClassifier(model_and_onnx[1])
    classifier.resample = predictor._PIL_FILTERS[interpolation.value]
    reference = torchvision_eval_transform(interpolation)
    for path in images:
        with Image.open(path) as image:
            expected = reference(image.convert("RGB")).numpy()
        np.testing.assert_allclose(classifier.load(path), expected, rtol=0, atol=1e-6, err_msg=str(path))


def test_center_crop_pads_like_torchvision_when_the_image_is_smaller_than_the_crop():
    predictor = load_predictor_module()
    image = Image.fromarray(np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3))  # 3 wide, 5 high
    ours = np.asarray(predictor.OnnxClassifier._center_crop(image, 8))
    theirs = v2.CenterCrop(8)(v2.functional.pil_to_tensor(image)).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ours, theirs)


def run_without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH_SHIM, *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO)


def test_the_shim_really_makes_torch_unimportable(tmp_path):
    script = tmp_path / "uses_torch.py"
    script.write_text("import torch\n")
    process = run_without_torch(str(script))
    assert process.returncode != 0 and "torch is blocked" in process.stderr


def test_torch_free_predictor_gives_pytorch_top1_and_probabilities(model_and_onnx, images):
    model, onnx_path = model_and_onnx
    process = run_without_torch(str(PREDICTOR), str(onnx_path), str(images[0].parent), "--json", "--top-k", "4")
    assert process.returncode == 0, process.stderr
    results = {Path(r["path"]).name: r for r in json.loads(process.stdout)}
    assert sorted(results) == sorted(p.name for p in images)

    transform = torchvision_eval_transform()
    batch = []
    for path in images:
        with Image.open(path) as image:
            batch.append(transform(image.convert("RGB")))
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.stack(batch)), dim=1).numpy()
    top1 = probabilities.argmax(axis=1)
    assert len(set(top1.tolist())) > 1, "the test images should not all get the same class"
    for path, expected_top1, expected in zip(images, top1, probabilities, strict=True):
        guesses = results[path.name]["top_k"]
        assert guesses[0]["index"] == expected_top1 and guesses[0]["label"] == CLASS_NAMES[expected_top1]
        by_index = {g["index"]: g["probability"] for g in guesses}
        np.testing.assert_allclose([by_index[i] for i in range(4)], expected, rtol=0, atol=1e-4)


def test_unreadable_images_are_reported_by_path_and_the_rest_are_classified(model_and_onnx, images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not really a jpeg")
    missing = tmp_path / "missing.png"
    process = run_without_torch(str(PREDICTOR), str(model_and_onnx[1]), str(images[0]), str(broken), str(missing),
                                "--top-k", "1")
    assert process.returncode == 1
    assert f"error: cannot read {broken}" in process.stderr
    assert f"error: cannot read {missing}" in process.stderr
    assert process.stdout.startswith(f"{images[0]}: ")
    assert "Traceback" not in process.stderr


def test_a_model_without_resnetzoo_metadata_is_refused_with_the_fix(model_and_onnx, images, tmp_path, capsys):
    proto = onnx.load(str(model_and_onnx[1]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save_model(proto, str(bare))
    predictor = load_predictor_module()
    assert predictor.main([str(bare), str(images[0])]) == 2
    err = capsys.readouterr().err
    assert "has no resnetzoo metadata" in err and "python -m resnetzoo.export" in err


def test_a_missing_or_corrupt_model_file_is_a_clear_error(tmp_path, images, capsys):
    predictor = load_predictor_module()
    assert predictor.main([str(tmp_path / "nope.onnx"), str(images[0])]) == 2
    assert "No such model file" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"garbage")
    assert predictor.main([str(corrupt), str(images[0])]) == 2
    assert "Cannot load" in capsys.readouterr().err


def test_predictor_runs_a_float16_export(images, tmp_path):
    torch.manual_seed(1)
    config = ModelConfig(architecture=None, num_classes=4, num_layers=[1, 1, 1, 1], class_names=CLASS_NAMES,
                         eval_transform=dict(EVAL_TRANSFORM))
    model = build_model(config).eval()
    export_model(model, tmp_path, formats=["onnx"], fp16=True, progress=False, num_verify_inputs=4)
    predictor = load_predictor_module()
    classifier = predictor.OnnxClassifier(tmp_path / "model.fp16.onnx")
    assert classifier.input_dtype == np.float16
    results = classifier.predict(images[:2], top_k=4)
    transform = torchvision_eval_transform()
    for path, result in zip(images[:2], results, strict=True):
        with Image.open(path) as image, torch.no_grad():
            expected = torch.softmax(model(transform(image.convert("RGB"))[None]), dim=1)[0].numpy()
        got = {g["index"]: g["probability"] for g in result["top_k"]}
        np.testing.assert_allclose([got[i] for i in range(4)], expected, rtol=0, atol=1e-2)  # fp16 precision


@pytest.fixture(scope="module")
def awkward_images(tmp_path_factory) -> list[Path]:
    """Files where naive decoding goes wrong: EXIF-rotated JPEG, half-transparent PNG, 16-bit greyscale PNG."""
    folder = tmp_path_factory.mktemp("awkward")
    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((72, 40), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated = folder / "rotated.jpg"
    base.save(rotated, exif=exif.tobytes(), quality=95)
    transparent = folder / "transparent.png"
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (40, 72), dtype=np.uint8)))
    rgba.save(transparent)
    deep = folder / "sixteen_bit.png"
    Image.fromarray((rng.random((50, 50)) * 65535).astype(np.uint16)).save(deep)
    assert Image.open(deep).mode.startswith("I")
    return [rotated, transparent, deep]


def test_torch_free_predictor_agrees_with_resnetzoo_predict_on_awkward_files(model_and_onnx, images, awkward_images):
    from resnetzoo.predict import predict

    model, onnx_path = model_and_onnx
    paths = [*images, *awkward_images]
    process = run_without_torch(str(PREDICTOR), str(onnx_path), *map(str, paths), "--json", "--top-k", "4")
    assert process.returncode == 0, process.stderr
    ours = json.loads(process.stdout)
    theirs = predict(model, paths, topk=4)
    for path, mine, reference in zip(paths, ours, theirs, strict=True):
        assert mine["top_k"][0]["index"] == reference.indices[0], path
        got = {g["index"]: g["probability"] for g in mine["top_k"]}
        expected = dict(zip(reference.indices, reference.probabilities, strict=True))
        np.testing.assert_allclose([got[i] for i in range(4)], [expected[i] for i in range(4)], rtol=0, atol=1e-4)


def test_decoding_applies_exif_orientation_and_composites_transparency_over_white(awkward_images):
    predictor = load_predictor_module()
    rotated, transparent, deep = awkward_images
    assert predictor.open_image(rotated).size == (40, 72)  # stored 72x40, displayed upright as 40x72
    with Image.open(transparent) as image:
        alpha = np.asarray(image)[..., 3:].astype(np.float64) / 255.0
        colour = np.asarray(image)[..., :3].astype(np.float64)
    expected = colour * alpha + 255.0 * (1.0 - alpha)
    assert np.abs(np.asarray(predictor.open_image(transparent)).astype(np.float64) - expected).max() <= 1.0
    assert np.asarray(predictor.open_image(deep)).max() > 200  # not clipped to white, not crushed to black
    assert np.asarray(predictor.open_image(deep)).min() < 50


TRITON_SCRIPT = REPO / "export" / "triton_repository.py"


def test_triton_repository_is_laid_out_from_the_onnx_metadata_without_torch(model_and_onnx, tmp_path):
    _, onnx_path = model_and_onnx
    repository = tmp_path / "model_repository"
    process = run_without_torch(str(TRITON_SCRIPT), str(onnx_path), "--repository", str(repository),
                                "--name", "fruit", "--max-batch-size", "8")
    assert process.returncode == 0, process.stderr
    folder = repository / "fruit"
    assert (folder / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    assert (folder / "labels.txt").read_text().splitlines() == CLASS_NAMES
    config = (folder / "config.pbtxt").read_text()
    assert 'name: "fruit"' in config and 'backend: "onnxruntime"' in config and "max_batch_size: 8" in config
    assert 'input [ { name: "images", data_type: TYPE_FP32, dims: [ 3, 32, 32 ] } ]' in config
    assert 'output [ { name: "logits", data_type: TYPE_FP32, dims: [ 4 ], label_filename: "labels.txt" } ]' in config
    assert "dynamic_batching { }" in config and "KIND_GPU" in config


def test_triton_repository_refuses_a_file_with_a_fixed_batch_axis(model_and_onnx, tmp_path, capsys):
    proto = onnx.load(str(model_and_onnx[1]))
    for value in (proto.graph.input[0], proto.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 1  # what a careless export produces
    fixed = tmp_path / "fixed.onnx"
    onnx.save_model(proto, str(fixed))
    module = load_triton_module()
    assert module.main([str(fixed), "--repository", str(tmp_path / "repo"), "--name", "x"]) == 2
    assert "batch axis is fixed at 1" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()


def load_triton_module():
    return load_module(TRITON_SCRIPT, "triton_repository")


@pytest.mark.parametrize("name", ["../escaped", "a/b", ".", "..", 'fruit"\nbackend: "python', ""])
def test_triton_repository_refuses_a_name_that_is_not_a_plain_folder_name(model_and_onnx, tmp_path, capsys, name):
    repository = tmp_path / "deep" / "repo"
    assert load_triton_module().main([str(model_and_onnx[1]), "--repository", str(repository), "--name", name]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: Invalid model name") and "letters, digits" in error
    assert error.count("\n") == 1  # one line, no traceback
    assert list(tmp_path.rglob("*")) == []  # nothing written, inside the repository or beside it


def test_triton_repository_refuses_class_names_with_line_breaks(model_and_onnx, tmp_path, capsys):
    proto = onnx.load(str(model_and_onnx[1]))
    for prop in proto.metadata_props:
        if prop.key == "class_names":
            prop.value = json.dumps(["apple", "banana\ncherry", "cherry", "date"])
    broken = tmp_path / "broken.onnx"
    onnx.save_model(proto, str(broken))
    assert load_triton_module().main([str(broken), "--repository", str(tmp_path / "repo"), "--name", "fruit"]) == 2
    error = capsys.readouterr().err
    assert "class name 1 ('banana\\ncherry') contains a line break" in error and "export again" in error
    assert not (tmp_path / "repo").exists()


def test_triton_repository_opens_one_onnxruntime_session(model_and_onnx, tmp_path, monkeypatch):
    module = load_triton_module()
    sessions = []
    original = module.ort.InferenceSession

    def counting_session(*args, **kwargs):
        sessions.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(module.ort, "InferenceSession", counting_session)
    module.write_repository(model_and_onnx[1], tmp_path / "repo", "fruit")
    assert len(sessions) == 1
    assert (tmp_path / "repo" / "fruit" / "labels.txt").read_text().splitlines() == CLASS_NAMES


def test_folder_expansion_matches_resnetzoo_including_hidden_and_tool_files(tmp_path):
    # The torch-free predictor restates resnetzoo.data's rule; a macOS zip's __MACOSX/._x.jpg must not reach it.
    from resnetzoo.data import IMAGE_SUFFIXES, find_image_files

    predictor = load_predictor_module()
    for relative in ("a.jpg", "b/c.PNG", "._d.jpg", ".hidden/e.jpg", "__MACOSX/._a.jpg", "notes.txt", "f.webp"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    assert predictor.find_images([tmp_path]) == find_image_files(tmp_path)
    assert [p.name for p in predictor.find_images([tmp_path])] == ["a.jpg", "c.PNG", "f.webp"]
    assert set(predictor.IMAGE_SUFFIXES) == set(IMAGE_SUFFIXES)


def test_triton_repository_cpu_instances_and_version_folder(model_and_onnx, tmp_path):
    repository = tmp_path / "model_repository"
    assert load_triton_module().main([str(model_and_onnx[1]), "--repository", str(repository), "--name", "fruit",
                                      "--cpu", "--version", "3"]) == 0
    folder = repository / "fruit"
    assert (folder / "3" / "model.onnx").read_bytes() == model_and_onnx[1].read_bytes()
    assert not (folder / "1").exists()
    config = (folder / "config.pbtxt").read_text()
    assert "KIND_CPU" in config and "KIND_GPU" not in config
    assert "max_batch_size: 64" in config  # the documented default
