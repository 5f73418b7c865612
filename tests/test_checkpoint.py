"""Training checkpoints: safe loading, RNG round trips, and durability when the process is killed mid-save."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from resnetzoo.checkpoint import CheckpointError, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint(tmp_path / "c.pt", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(100)
    np.random.seed(100)
    torch.manual_seed(100)
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


@pytest.fixture
def four_fake_gpus(monkeypatch):
    """Four GPUs whose generators are recorded; reading or writing all of them at once fails the test."""
    calls = []

    def refuse(*args):
        raise AssertionError("touched the RNG of every GPU")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: calls.append(("get", device)) or torch.tensor([device.index]))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append(("set", int(state), device)))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", refuse)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse)
    return calls


def test_each_rank_saves_and_restores_only_its_own_gpu_rng(four_fake_gpus):
    rank_device = torch.device("cuda", 2)
    state = capture_rng_state(rank_device)
    restore_rng_state(state, rank_device)
    assert four_fake_gpus == [("get", rank_device), ("set", 2, rank_device)]


def test_an_older_checkpoint_with_every_gpu_restores_this_device_only(four_fake_gpus):
    state = {**capture_rng_state("cpu"), "cuda": [torch.tensor([10 + i]) for i in range(4)]}
    restore_rng_state(state, "cuda:3")
    assert four_fake_gpus == [("set", 13, torch.device("cuda", 3))]


def test_state_round_trips(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path / "c.pt", {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3})
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["epoch"] == 3
    assert all(torch.equal(a, b) for a, b in zip(state["model"].values(), model.state_dict().values(), strict=True))
    optimizer.load_state_dict(state["optimizer"])


class _RunsCode:
    def __reduce__(self):
        return (os.makedirs, (str(_RunsCode.marker),))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    _RunsCode.marker = tmp_path / "code-ran"
    torch.save({"format": "resnetzoo-checkpoint/1", "payload": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="Refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not _RunsCode.marker.exists()


def test_foreign_or_broken_files_are_clear_errors(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a resnetzoo training checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "garbage.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "garbage.pt")
    with pytest.raises(CheckpointError, match="No checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def _spawn(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], stdout=subprocess.PIPE, text=True)


def test_sigkill_in_the_middle_of_a_save_leaves_the_previous_checkpoint_identical(tmp_path):
    path = tmp_path / "checkpoint.pt"
    process = _spawn(
        """
        import os, sys, time, torch
        from resnetzoo.checkpoint import save_checkpoint
        save_checkpoint(sys.argv[1], {"epoch": 1, "weights": torch.arange(1000.0)})
        print("first saved", flush=True)
        def stalled_fsync(fd):  # the new data is written but not yet durable nor renamed: the worst moment
            print("saving", flush=True)
            time.sleep(120)
        os.fsync = stalled_fsync
        save_checkpoint(sys.argv[1], {"epoch": 2, "weights": torch.zeros(1_000_000)})
        """,
        str(path),
    )
    try:
        assert process.stdout.readline().strip() == "first saved"
        before = path.read_bytes()
        assert process.stdout.readline().strip() == "saving"
        assert list(tmp_path.glob(".checkpoint.pt.*.part"))  # the half-done new checkpoint exists
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    assert path.read_bytes() == before
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.arange(1000.0))
    save_checkpoint(path, {"epoch": 3})  # the next save clears the debris of the killed one
    assert not list(tmp_path.glob(".checkpoint.pt.*.part"))


def test_sigkill_at_a_random_moment_of_repeated_saves_never_breaks_the_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    process = _spawn(
        """
        import sys, torch
        from resnetzoo.checkpoint import save_checkpoint
        epoch = 0
        while True:
            epoch += 1
            save_checkpoint(sys.argv[1], {"epoch": epoch, "weights": torch.full((2_000_000,), float(epoch))})
            print(epoch, flush=True)
        """,
        str(path),
    )
    try:
        assert process.stdout.readline().strip() == "1"
        time.sleep(random.Random().uniform(0.0, 0.5))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    state = load_checkpoint(path)
    assert state["epoch"] >= 1
    assert torch.equal(state["weights"], torch.full((2_000_000,), float(state["epoch"])))
