"""Hostile and broken files: each is a clear error of our own type that names the file; nothing runs, nothing crashes.

The property tests at the end feed arbitrary bytes (and arbitrary safetensors headers) to every
loader and accept only ``ResnetzooError`` subclasses.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as safetensors_bytes

import resnetzoo
from resnetzoo import hub
from resnetzoo.config import ConfigError, ModelConfig
from resnetzoo.errors import ResnetzooError, WeightsFileError
from resnetzoo.weights.files import load_state_dict_file
from resnetzoo.weights.safe import MAX_HEADER_BYTES, load_safetensors, read_safetensors_header

# Hostile pickles use protocols torch.load warns about before refusing them; the warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")

# ------------------------------------------------------------------------------------------ builders

def raw_safetensors(header: dict | bytes, data: bytes = b"", declared_length: int | None = None) -> bytes:
    """A safetensors file written by hand, so that it can be wrong in exactly one way."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(body) if declared_length is None else declared_length
    return struct.pack("<Q", length) + body + data


def good_safetensors() -> bytes:
    return safetensors_bytes({"a": torch.arange(4, dtype=torch.float32), "b": torch.ones(2, 2)})


def tiny_folder(folder: Path) -> Path:
    torch.manual_seed(0)
    resnetzoo.create("resnet18", num_layers=[1, 1, 1, 1], num_classes=3).save_pretrained(folder)
    return folder


def assert_clear_error(error: BaseException, path: Path) -> None:
    assert isinstance(error, ResnetzooError)
    assert str(path) in str(error), str(error)


SAFETENSORS_CASES = {
    "empty": b"",
    "shorter_than_length_prefix": b"\x10\x00\x00",
    "garbage": os.urandom(256),
    "truncated": good_safetensors()[:-7],
    "zero_header_length": struct.pack("<Q", 0) + b"{}",
    "header_longer_than_file": raw_safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                                               b"\0" * 4, declared_length=10_000),
    "oversized_header": struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{" + b" " * 64,
    "header_not_json": raw_safetensors(b"{not json"),
    "header_not_utf8": raw_safetensors(b'{"\xff\xfe": 1}'),
    "header_not_object": raw_safetensors(b"[1, 2, 3]"),
    "duplicate_keys": raw_safetensors(
        b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
        b' "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', b"\0" * 8),
    "overlapping_ranges": raw_safetensors({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12),
    "range_past_end_of_data": raw_safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8),
    "shape_disagrees_with_range": raw_safetensors({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                                                  b"\0" * 8),
    "negative_shape": raw_safetensors({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4),
    "unknown_dtype": raw_safetensors({"a": {"dtype": "PY_OBJECT", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
    "metadata_not_strings": raw_safetensors({"__metadata__": {"format": 3}}),
    "huge_claimed_tensor": raw_safetensors({"a": {"dtype": "F64", "shape": [2**40, 2**20], "data_offsets": [0, 2**63]}}),
    "deeply_nested_header": raw_safetensors(b"[" * 100_000 + b"]" * 100_000),
    "gap_between_tensors": raw_safetensors({
        "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}, b"\0" * 12),
}


# ------------------------------------------------------------------------------------------ safetensors


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_broken_safetensors_is_a_clear_error_from_every_loader(tmp_path, case):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(SAFETENSORS_CASES[case])
    for loader in (load_safetensors, load_state_dict_file):
        with pytest.raises(WeightsFileError) as info:
            loader(path)
        assert_clear_error(info.value, path)


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_broken_weights_in_a_saved_folder_is_a_clear_error(tmp_path, case):
    folder = tiny_folder(tmp_path / "model")
    (folder / hub.WEIGHTS_NAME).write_bytes(SAFETENSORS_CASES[case])
    with pytest.raises(WeightsFileError) as info:
        resnetzoo.create(folder)
    assert_clear_error(info.value, folder / hub.WEIGHTS_NAME)


def test_the_good_file_used_above_does_load(tmp_path):
    # Guards the cases above: they fail because of their one defect, not because the builder is wrong.
    path = tmp_path / "weights.safetensors"
    path.write_bytes(good_safetensors())
    assert torch.equal(load_safetensors(path)["a"], torch.arange(4, dtype=torch.float32))
    path.write_bytes(raw_safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0\0\x80\x3f"))
    assert load_safetensors(path)["a"].item() == 1.0


@pytest.mark.parametrize("case", ["duplicate_keys", "overlapping_ranges", "oversized_header", "truncated"])
def test_the_error_says_what_is_wrong(tmp_path, case):
    path = tmp_path / "w.safetensors"
    path.write_bytes(SAFETENSORS_CASES[case])
    expected = {"duplicate_keys": "duplicate names ['a']", "overlapping_ranges": "overlap",
                "oversized_header": "corrupt safetensors header: it claims", "truncated": "truncated"}[case]
    with pytest.raises(WeightsFileError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        load_safetensors(path)


def test_a_torch_checkpoint_named_safetensors_says_so(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(WeightsFileError, match=r"PyTorch checkpoint \(torch.save or pickle\), not a safetensors file.*Rename"):
        load_state_dict_file(path)


def test_a_valid_safetensors_whose_header_length_starts_with_0x80_loads(tmp_path):
    # 0x80 is also the first byte of a pickle; the hint above must not misfire on a header of 640 bytes.
    header = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": {"pad": ""}}
    body = json.dumps(header).encode()
    header["__metadata__"]["pad"] = "x" * (0x280 - len(body))
    path = tmp_path / "w.safetensors"
    path.write_bytes(raw_safetensors(header, b"\0\0\x80\x3f"))
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert load_safetensors(path)["a"].item() == 1.0


def test_header_reader_refuses_the_same_files(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(SAFETENSORS_CASES["metadata_not_strings"])
    with pytest.raises(WeightsFileError, match="__metadata__"):
        read_safetensors_header(path)


# ------------------------------------------------------------------------------------------ pickles


class RunsCode:
    """Unpickling this calls Path.touch(marker): proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("container", ["torch_zip", "legacy_pickle", "nested_in_state_dict"])
def test_a_pickle_carrying_code_is_refused_and_nothing_runs(tmp_path, container):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pth"
    if container == "torch_zip":
        torch.save(RunsCode(marker), path)
    elif container == "legacy_pickle":
        path.write_bytes(pickle.dumps(RunsCode(marker)))
    else:
        torch.save({"state_dict": {"conv1.weight": torch.zeros(1), "evil": RunsCode(marker)}}, path)
    assert not marker.exists()

    with pytest.raises(WeightsFileError) as info:
        load_state_dict_file(path)

    assert_clear_error(info.value, path)
    assert not marker.exists()
    assert "nothing in the file was executed" in str(info.value) or "not a readable" in str(info.value)


def test_a_pickle_carrying_code_is_refused_by_create(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "resnet18.pth"
    torch.save(RunsCode(marker), path)
    with pytest.raises(WeightsFileError):
        resnetzoo.create("resnet18", pretrained=path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [b"", b"\x80\x04garbage", b"PK\x03\x04 truncated zip", os.urandom(512)])
def test_a_broken_pth_is_a_clear_error(tmp_path, payload):
    path = tmp_path / "model.pth"
    path.write_bytes(payload)
    with pytest.raises(WeightsFileError) as info:
        load_state_dict_file(path)
    assert_clear_error(info.value, path)


def test_a_truncated_torch_checkpoint_is_a_clear_error(tmp_path):
    buffer = io.BytesIO()
    torch.save({"w": torch.randn(64, 64)}, buffer)
    path = tmp_path / "model.pth"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(WeightsFileError, match="truncated") as info:
        load_state_dict_file(path)
    assert_clear_error(info.value, path)


# ------------------------------------------------------------------------------------------ config.json


def valid_config() -> dict:
    return {"format": "resnetzoo/1", **ModelConfig(architecture=None, num_classes=3, num_layers=[1, 1, 1, 1]).to_dict()}


CONFIG_CASES = {
    "unknown_architecture": ({"architecture": "resnet05"}, "unknown architecture 'resnet05' \\(did you mean"),
    "architecture_with_wrong_shape": ({"architecture": "resnet50"}, "does not match its shape: block='BasicBlock'"),
    "num_classes_as_string": ({"num_classes": "3"}, "num_classes must be an integer"),
    "num_classes_negative": ({"num_classes": -1}, "num_classes must be an integer"),
    "num_classes_bool": ({"num_classes": True}, "num_classes must be an integer"),
    "num_layers_too_few": ({"num_layers": [1, 1]}, "num_layers must be four integers"),
    "num_layers_absurd": ({"num_layers": [10**9, 1, 1, 1]}, "num_layers must be four integers"),
    "width_absurd": ({"block": "Bottleneck", "width_per_group": 10**6}, "width_per_group must be"),
    "unknown_block": ({"block": "os.system"}, "block must be one of"),
    "basic_block_with_groups": ({"groups": 32}, "BasicBlock needs groups=1"),
    "class_names_wrong_length": ({"class_names": ["a"]}, "class_names must be a list of 3 strings"),
    "mean_not_finite": ({"eval_transform": {"resize_size": 8, "crop_size": 8, "mean": [float("nan")], "std": [1]}},
                        "mean must be a list of 1..64 finite numbers"),
    "std_zero": ({"eval_transform": {"resize_size": 8, "crop_size": 8, "mean": [0], "std": [0]}}, "std must be positive"),
    "bad_interpolation": ({"eval_transform": {"resize_size": 8, "crop_size": 8, "mean": [0], "std": [1],
                                              "interpolation": "magic"}}, "interpolation must be one of"),
    "crop_size_absurd": ({"eval_transform": {"resize_size": 8, "crop_size": 10**7, "mean": [0], "std": [1]}},
                         "crop_size must be an integer"),
    "bad_sha256": ({"base_weights_sha256": "xyz"}, "base_weights_sha256 must be 64"),
    "extra_not_object": ({"extra": [1, 2]}, "extra must be an object"),
    "unknown_field": ({"exec": "rm -rf /"}, "unknown fields \\['exec'\\]"),
    "newer_format": ({"format": "resnetzoo/9"}, "format 'resnetzoo/9'"),
    "missing_num_classes": ({"num_classes": None}, "num_classes"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_bad_config_json_is_a_clear_error_naming_the_file(tmp_path, case):
    folder = tiny_folder(tmp_path / "model")
    change, message = CONFIG_CASES[case]
    data = {**valid_config(), **change}
    if case == "missing_num_classes":
        del data["num_classes"]
    (folder / hub.CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message) as info:
        resnetzoo.create(folder)
    assert_clear_error(info.value, folder / hub.CONFIG_NAME)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe\x00", b"[]", b"null", b"[" * 100_000, b'{"num_classes": 1e999}'])
def test_config_json_that_is_not_a_config_object_is_a_clear_error(tmp_path, raw):
    folder = tiny_folder(tmp_path / "model")
    (folder / hub.CONFIG_NAME).write_bytes(raw)
    with pytest.raises(ConfigError) as info:
        resnetzoo.create(folder)
    assert_clear_error(info.value, folder / hub.CONFIG_NAME)


def test_a_config_claiming_a_huge_model_beside_small_weights_fails_before_allocating(tmp_path):
    folder = tiny_folder(tmp_path / "model")
    data = {**valid_config(), "block": "Bottleneck", "num_layers": [60, 60, 60, 60], "width_per_group": 1024,
            "groups": 64}
    (folder / hub.CONFIG_NAME).write_text(json.dumps(data))
    # Built for real this model would need ~10^13 parameters; the header comparison runs on the meta device.
    with pytest.raises(WeightsFileError, match="does not match config.json"):
        resnetzoo.create(folder)


def test_the_valid_config_used_above_does_load(tmp_path):
    folder = tiny_folder(tmp_path / "model")
    (folder / hub.CONFIG_NAME).write_text(json.dumps(valid_config()))
    assert resnetzoo.create(folder).config.num_classes == 3


# ------------------------------------------------------------------------------------------ properties

_PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_our_errors(call) -> None:
    with contextlib.suppress(ResnetzooError):  # the one accepted failure: ours, with a message
        call()


@_PROPERTY_SETTINGS
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_never_escape_the_file_loaders(data):
    with tempfile.TemporaryDirectory() as folder:
        for name in ("x.pth", "x.pt", "x.safetensors"):
            path = Path(folder) / name
            path.write_bytes(data)
            _only_our_errors(lambda path=path: load_state_dict_file(path))
        _only_our_errors(lambda: load_safetensors(Path(folder) / "x.safetensors"))
        _only_our_errors(lambda: read_safetensors_header(Path(folder) / "x.safetensors"))


@pytest.fixture(scope="module")
def saved_folder_bytes(tmp_path_factory) -> dict[str, bytes]:
    folder = tiny_folder(tmp_path_factory.mktemp("property") / "model")
    return {name: (folder / name).read_bytes() for name in (hub.CONFIG_NAME, hub.WEIGHTS_NAME)}


@_PROPERTY_SETTINGS
@given(data=st.binary(max_size=2048), replaced=st.sampled_from([hub.CONFIG_NAME, hub.WEIGHTS_NAME]))
def test_arbitrary_bytes_never_escape_the_folder_loader(saved_folder_bytes, data, replaced):
    with tempfile.TemporaryDirectory() as folder:
        for name, content in saved_folder_bytes.items():
            (Path(folder) / name).write_bytes(data if name == replaced else content)
        _only_our_errors(lambda: resnetzoo.create(folder))
        _only_our_errors(lambda: hub.parse_config(data, "config.json"))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_tensor_entry = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "I64", "BOOL", "XX"]),
    "shape": st.lists(st.integers(-2, 8), max_size=3),
    "data_offsets": st.lists(st.integers(-2, 300), min_size=0, max_size=3),
})


@_PROPERTY_SETTINGS
@given(
    entries=st.dictionaries(st.text(max_size=6), _tensor_entry | _json_values, max_size=4),
    metadata=st.none() | st.dictionaries(st.text(max_size=6), _json_values, max_size=3),
    data=st.binary(max_size=256),
)
def test_arbitrary_safetensors_headers_never_escape_the_loaders(entries, metadata, data):
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.safetensors"
        path.write_bytes(raw_safetensors(json.dumps(header).encode(), data))
        _only_our_errors(lambda: load_safetensors(path))
        _only_our_errors(lambda: load_state_dict_file(path))


@_PROPERTY_SETTINGS
@given(config=st.dictionaries(
    st.sampled_from(["architecture", "num_classes", "in_chans", "block", "num_layers", "groups", "width_per_group",
                     "zero_init_residual", "class_names", "eval_transform", "base_weights", "base_weights_sha256",
                     "extra", "format"]),
    _json_values, max_size=8))
def test_arbitrary_config_objects_are_accepted_or_refused_with_config_error(config):
    try:
        parsed = ModelConfig.from_dict({**valid_config(), **config}, source="config.json")
    except ConfigError:
        return
    parsed.validate()  # whatever passes must stay valid and buildable on the meta device
    hub.build_model_meta(parsed)
