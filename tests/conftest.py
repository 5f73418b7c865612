"""Shared fixtures. Every test runs with a private TORCH_HOME and with downloads switched off."""

from __future__ import annotations

import dataclasses
import hashlib
import io

import pytest
import torch
import torchvision

from resnetzoo.weights import records


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: the tests' tiny models gain nothing from more, and on a shared 2-core machine
    two threads spinning against each other made a 32 px forward pass up to 50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """A fresh, empty torchvision cache per test, and no network unless a test opts in."""
    torch_home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("RESNETZOO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RESNETZOO_WEIGHTS_URL", raising=False)
    return torch_home / "hub" / "checkpoints"


def torchvision_checkpoint_bytes(name: str, seed: int = 0) -> bytes:
    """A torchvision model with random init, saved exactly as torchvision's checkpoints are (torch.save of the state dict)."""
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


@pytest.fixture
def fake_published_weights(monkeypatch, isolated_cache):
    """Stand-ins for torchvision's published files: returns make(name, tag=None, cached=True) -> (record, bytes).

    The real records are kept (metrics, transforms, categories), but the URL names a file whose
    SHA-256 prefix is that of a random-init checkpoint made here, so hash checks run for real.
    """
    originals = records.weights_records
    replaced: dict[tuple[str, str], records.WeightsRecord] = {}

    def patched(model_name: str):
        return tuple(replaced.get((model_name.lower(), r.tag), r) for r in originals(model_name))

    monkeypatch.setattr(records, "weights_records", patched)

    def make(name: str, tag: str | None = None, cached: bool = True, seed: int = 0):
        real = records.default_record(name) if tag is None else next(r for r in originals(name) if r.tag == tag)
        payload = torchvision_checkpoint_bytes(name, seed)
        digest = hashlib.sha256(payload).hexdigest()
        stem = real.filename.rsplit("-", 1)[0]
        record = dataclasses.replace(real, url=f"https://download.pytorch.org/models/{stem}-{digest[:8]}.pth")
        replaced[(name, real.tag)] = record
        if cached:
            isolated_cache.mkdir(parents=True, exist_ok=True)
            (isolated_cache / record.filename).write_bytes(payload)
        return record, payload

    return make
