"""Pretrained weights: resolving tags, adapting checkpoints, the verified cache, downloads and hostile files.

No test touches the internet: published files are stood in for by random-init torchvision
checkpoints whose own SHA-256 prefix names them (see ``fake_published_weights`` in conftest.py),
and downloads come from a loopback HTTP server.
"""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path

import pytest
import torch
import torchvision
from loopback import serve_files
from safetensors.torch import save_file

import resnetzoo
from resnetzoo.errors import (
    StateDictMismatchError,
    UnknownWeightsError,
    WeightsFileError,
    WeightsHashMismatchError,
    WeightsUnavailableError,
)
from resnetzoo.weights import cache_dir, load_state_dict_file

# ----------------------------------------------------------------------------- resolving tags


def _checkpoint(payload: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(payload), weights_only=True)


def test_pretrained_true_loads_torchvisions_default_tag(fake_published_weights):
    record, payload = fake_published_weights("resnet50")
    assert record.tag == "IMAGENET1K_V2"  # torchvision's DEFAULT for resnet50
    model = resnetzoo.create("resnet50", pretrained=True)
    for key, value in _checkpoint(payload).items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.config.base_weights == "resnet50.IMAGENET1K_V2"
    assert model.config.eval_transform["resize_size"] == 232  # V2 weights were evaluated at resize 232
    assert len(model.config.class_names) == 1000


def test_default_is_v1_where_no_v2_exists(fake_published_weights):
    fake_published_weights("resnet18")
    model = resnetzoo.create("resnet18", pretrained=True)
    assert model.config.base_weights == "resnet18.IMAGENET1K_V1"
    assert model.config.eval_transform["resize_size"] == 256


@pytest.mark.parametrize("spelling", ["IMAGENET1K_V1", "imagenet1k_v1", "ResNet50_Weights.IMAGENET1K_V1"])
def test_tag_strings_are_case_insensitive(fake_published_weights, spelling):
    _, payload = fake_published_weights("resnet50", "IMAGENET1K_V1", seed=1)
    model = resnetzoo.create("resnet50", pretrained=spelling)
    assert torch.equal(model.conv1.weight, _checkpoint(payload)["conv1.weight"])
    assert model.config.base_weights == "resnet50.IMAGENET1K_V1"


def test_torchvision_weights_enum_member_is_accepted(fake_published_weights):
    _, payload = fake_published_weights("resnet50", "IMAGENET1K_V1")
    model = resnetzoo.create("resnet50", pretrained=torchvision.models.ResNet50_Weights.IMAGENET1K_V1)
    assert torch.equal(model.fc.weight, _checkpoint(payload)["fc.weight"])


def test_weights_enum_of_another_model_is_refused():
    with pytest.raises(UnknownWeightsError, match="Available tags: IMAGENET1K_V1, IMAGENET1K_V2"):
        resnetzoo.create("resnet50", pretrained=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)


def test_unknown_tag_lists_available_tags():
    with pytest.raises(UnknownWeightsError) as caught:
        resnetzoo.create("resnet18", pretrained="IMAGENET1K_V2")
    assert "Unknown weights 'IMAGENET1K_V2' for resnet18. Available tags: IMAGENET1K_V1." in str(caught.value)


# ----------------------------------------------------------------------------- adapting checkpoints


def test_pretrained_head_is_replaced_when_num_classes_differs(fake_published_weights, caplog):
    _, payload = fake_published_weights("resnet50")
    checkpoint = _checkpoint(payload)
    with caplog.at_level(logging.INFO, logger="resnetzoo"):
        model = resnetzoo.create("resnet50", pretrained=True, num_classes=150)
    state = model.state_dict()
    for key, value in checkpoint.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    assert model.fc.weight.shape == (150, 2048)
    assert model.config.class_names is None
    assert "Re-initialised the classifier head: 1000 classes" in caplog.text
    assert model(torch.randn(1, 3, 32, 32).expand(2, -1, -1, -1)).shape == (2, 150)


def test_one_channel_stem_is_the_sum_over_rgb(fake_published_weights, caplog):
    fake_published_weights("resnet18")
    rgb = resnetzoo.create("resnet18", pretrained=True).eval()
    with caplog.at_level(logging.INFO, logger="resnetzoo"):
        gray = resnetzoo.create("resnet18", pretrained=True, in_chans=1).eval()
    assert "from 3 to 1 input channels" in caplog.text
    assert torch.allclose(gray.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    # A gray image seen as R = G = B gives the same logits as the 1-channel model.
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(gray(image), rgb(image.expand(-1, 3, -1, -1)), atol=1e-4)


def test_more_channels_repeat_rgb_and_rescale(fake_published_weights):
    fake_published_weights("resnet18")
    rgb = resnetzoo.create("resnet18", pretrained=True)
    five = resnetzoo.create("resnet18", pretrained=True, in_chans=5)
    expected = torch.cat([rgb.conv1.weight, rgb.conv1.weight[:, :2]], dim=1) * (3 / 5)
    assert torch.allclose(five.conv1.weight, expected)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_are_stripped(tmp_path, prefix):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None, num_classes=4)
    path = tmp_path / "wrapped.pth"
    torch.save({prefix + k: v for k, v in reference.state_dict().items()}, path)
    model = resnetzoo.create("resnet18", pretrained=path)
    assert model.config.num_classes == 4  # taken from the weights when num_classes is not given
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_nested_training_checkpoint_is_unwrapped(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 3, "state_dict": reference.state_dict()}, path)
    model = resnetzoo.create("resnet18", pretrained=str(path))
    assert torch.equal(model.conv1.weight, reference.conv1.weight)


def test_safetensors_state_dict_file_loads(tmp_path):
    reference = torchvision.models.resnet34(weights=None)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    model = resnetzoo.create("resnet34", pretrained=path).eval()
    with torch.no_grad():
        images = torch.randn(1, 3, 32, 32)
        assert torch.allclose(model(images), reference.eval()(images), atol=1e-5)


def test_mismatched_architecture_names_the_keys(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(StateDictMismatchError) as caught:
        resnetzoo.create("resnet34", pretrained=path)
    message = str(caught.value)
    assert "missing" in message and "layer1.2.conv1.weight" in message
    assert "resnet18.pth" in message


def test_mis_shaped_and_unexpected_keys_are_named(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    state["extra.bias"] = torch.zeros(3)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(StateDictMismatchError) as caught:
        resnetzoo.create("resnet18", pretrained=path)
    assert "1 unexpected: extra.bias" in str(caught.value)
    assert "layer1.0.conv1.weight (64, 64, 1, 1) vs model (64, 64, 3, 3)" in str(caught.value)


# ----------------------------------------------------------------------------- hostile and broken files


class _WritesAFile:
    """Unpickling this would create ``marker``: what a malicious checkpoint does with os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _WritesAFile(marker)}, path)
    with pytest.raises(WeightsFileError, match="nothing in the file was executed"):
        resnetzoo.create("resnet18", pretrained=path)
    assert not marker.exists()


def test_truncated_pth_is_a_clear_error(tmp_path):
    path = tmp_path / "truncated.pth"
    buffer = io.BytesIO()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), buffer)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(WeightsFileError, match="truncated"):
        load_state_dict_file(path)


def test_safetensors_with_garbage_header_is_a_clear_error(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes((64).to_bytes(8, "little") + b"{not json" + b"\x00" * 80)
    with pytest.raises(WeightsFileError, match="garbage.safetensors.*corrupt safetensors header"):
        resnetzoo.create("resnet18", pretrained=path)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsFileError, match="no such file"):
        resnetzoo.create("resnet18", pretrained=tmp_path / "nope.pth")


def test_file_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsFileError, match="not a state dict"):
        load_state_dict_file(path)


def test_cached_file_with_wrong_hash_is_refused_before_use(fake_published_weights, isolated_cache):
    record, payload = fake_published_weights("resnet18")
    cached = isolated_cache / record.filename
    cached.write_bytes(payload[:-10] + b"0123456789")  # same size, different content
    with pytest.raises(WeightsHashMismatchError) as caught:
        resnetzoo.create("resnet18", pretrained=True)
    message = str(caught.value)
    assert str(cached) in message
    assert f"expected a hash starting with {record.sha256_prefix}" in message
    assert "python -m resnetzoo.weights import" in message


def test_cache_is_torchvisions(isolated_cache):
    assert cache_dir() == Path(torch.hub.get_dir()) / "checkpoints" == isolated_cache


# ----------------------------------------------------------------------------- downloads


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("RESNETZOO_OFFLINE", raising=False)


def test_download_from_mirror_fills_cache_with_progress(fake_published_weights, isolated_cache, online, monkeypatch, capsys):
    record, payload = fake_published_weights("resnet18", cached=False)
    with serve_files({f"mirror/{record.filename}": payload}) as (base_url, requested):
        monkeypatch.setenv("RESNETZOO_WEIGHTS_URL", f"{base_url}/mirror")
        model = resnetzoo.create("resnet18", pretrained=True)
    assert requested == [f"/mirror/{record.filename}"]
    assert (isolated_cache / record.filename).read_bytes() == payload
    assert torch.equal(model.conv1.weight, _checkpoint(payload)["conv1.weight"])
    assert record.filename in capsys.readouterr().err  # tqdm's progress bar
    assert [p.name for p in isolated_cache.iterdir()] == [record.filename]


def test_download_with_wrong_content_leaves_nothing_in_cache(fake_published_weights, isolated_cache, online, monkeypatch):
    record, payload = fake_published_weights("resnet18", cached=False)
    with serve_files({f"mirror/{record.filename}": payload[::-1]}) as (base_url, _):
        monkeypatch.setenv("RESNETZOO_WEIGHTS_URL", f"{base_url}/mirror")
        with pytest.raises(WeightsHashMismatchError, match="nothing was saved"):
            resnetzoo.create("resnet18", pretrained=True)
    assert not isolated_cache.exists() or list(isolated_cache.iterdir()) == []


def test_interrupted_download_leaves_nothing_in_cache(fake_published_weights, isolated_cache, online, monkeypatch):
    record, payload = fake_published_weights("resnet18", cached=False)
    with serve_files({f"mirror/{record.filename}": payload}, truncate=True) as (base_url, _):
        monkeypatch.setenv("RESNETZOO_WEIGHTS_URL", f"{base_url}/mirror")
        with pytest.raises((WeightsUnavailableError, WeightsHashMismatchError)):
            resnetzoo.create("resnet18", pretrained=True)
    assert not isolated_cache.exists() or list(isolated_cache.iterdir()) == []


def test_missing_file_on_mirror_is_unavailable(fake_published_weights, isolated_cache, online, monkeypatch):
    record, _ = fake_published_weights("resnet18", cached=False)
    with serve_files({}) as (base_url, _):
        monkeypatch.setenv("RESNETZOO_WEIGHTS_URL", f"{base_url}/mirror")
        with pytest.raises(WeightsUnavailableError, match="Not Found"):
            resnetzoo.create("resnet18", pretrained=True)
    assert not isolated_cache.exists() or list(isolated_cache.iterdir()) == []


def _offline_message_checks(message: str, record, isolated_cache) -> None:
    assert "resnet18.IMAGENET1K_V1" in message
    assert str(isolated_cache / record.filename) in message
    assert record.filename in message and "http" in message
    assert f"python -m resnetzoo.weights import /path/to/{record.filename}" in message


def test_offline_without_cache_fails_fast_with_instructions(fake_published_weights, isolated_cache):
    record, _ = fake_published_weights("resnet18", cached=False)
    with pytest.raises(WeightsUnavailableError) as caught:
        resnetzoo.create("resnet18", pretrained=True)
    _offline_message_checks(str(caught.value), record, isolated_cache)
    assert record.url in str(caught.value)


def test_unreachable_network_fails_within_seconds(fake_published_weights, isolated_cache, online, monkeypatch):
    record, _ = fake_published_weights("resnet18", cached=False)
    with serve_files({}) as (base_url, _):
        closed_port_url = base_url  # the server is shut down on exit: its port now refuses connections
    monkeypatch.setenv("RESNETZOO_WEIGHTS_URL", closed_port_url)
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as caught:
        resnetzoo.create("resnet18", pretrained=True)
    assert time.monotonic() - started < 5
    _offline_message_checks(str(caught.value), record, isolated_cache)
    assert "download failed" in str(caught.value)


def test_cached_file_is_used_without_network(fake_published_weights):
    # conftest sets RESNETZOO_OFFLINE=1: a good cached file needs no network at all.
    _, payload = fake_published_weights("resnet18")
    model = resnetzoo.create("resnet18", pretrained=True)
    assert torch.equal(model.fc.bias, _checkpoint(payload)["fc.bias"])


def test_atomic_write_gives_ordinary_permissions_and_keeps_old_file_on_error(tmp_path):
    from resnetzoo._io import atomic_write

    target = tmp_path / "file.bin"
    with atomic_write(target) as handle:
        handle.write(b"first")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"second, half")
        raise RuntimeError("crash while saving")
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_a_server_that_never_answers_times_out_as_configured(fake_published_weights, isolated_cache, online, monkeypatch):
    import socket

    record, _ = fake_published_weights("resnet18", cached=False)
    # A listening socket that never accepts: the connection is queued by the kernel, the request never answered.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        monkeypatch.setenv("RESNETZOO_WEIGHTS_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("RESNETZOO_DOWNLOAD_TIMEOUT", "0.5")
        started = time.monotonic()
        with pytest.raises(WeightsUnavailableError, match="download failed .*timed out"):
            resnetzoo.create("resnet18", pretrained=True)
        assert time.monotonic() - started < 4
    finally:
        silent.close()
    assert not isolated_cache.exists() or list(isolated_cache.iterdir()) == []


def test_a_file_that_is_no_checkpoint_says_so_instead_of_blaming_pickle(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"architecture": "resnet18"}')
    with pytest.raises(WeightsFileError, match=r"neither a PyTorch checkpoint \(torch.save\) nor a safetensors file"):
        resnetzoo.create("resnet18", pretrained=path)


def test_a_folder_as_weights_file_points_to_create_or_its_model_safetensors(tmp_path):
    resnetzoo.create("resnet18", num_classes=3).save_pretrained(tmp_path / "run")
    with pytest.raises(WeightsFileError, match=r"it is a folder.*resnetzoo.create\(.*model.safetensors"):
        resnetzoo.create("resnet18", pretrained=tmp_path / "run")
    assert resnetzoo.create("resnet18", pretrained=tmp_path / "run" / "model.safetensors").num_classes == 3
