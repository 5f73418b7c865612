"""DistributedDataParallel through torchrun: two CPU processes (Gloo) on a tiny dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from images import write_color_classes

import resnetzoo
from resnetzoo.config import ModelConfig, build_model
from resnetzoo.data import load_splits
from resnetzoo.hub import save_pretrained
from resnetzoo.train import Trainer

WORKER = """
import json, os, sys
from pathlib import Path

import torch

torch.set_num_threads(1)
from resnetzoo import distributed, train

results = Path(sys.argv[1])
context = distributed.init_distributed("cpu")
torch.manual_seed(100 + context.rank)  # the CLI reseeds; DDP must start every rank from rank 0's weights anyway
written = []
real_replace = os.replace


def recording_replace(source, destination):  # every atomic write ends in os.replace
    written.append(os.path.basename(destination))
    return real_replace(source, destination)


os.replace = recording_replace
trainers = []
real_train = train.Trainer.train


def keep_trainer(self):
    trainers.append(self)
    history = real_train(self)
    self.final_val = self.evaluate("val")  # while the process group is up (main() leaves it at the end)
    return history


train.Trainer.train = keep_trainer
status = train.main(sys.argv[2:])
trainer = trainers[0]
val = trainer.final_val
torch.save(trainer.model.state_dict(), results / f"rank{context.rank}.pt")
(results / f"rank{context.rank}.json").write_text(json.dumps(
    {"status": status, "history": trainer.history, "val": val, "written": sorted(set(written)),
     "world_size": context.world_size, "steps": len(trainer.train_loader)}))
distributed.cleanup()
"""


def make_folder(root, per_class=10):
    return write_color_classes(root, [f"class_{label}" for label in range(3)], per_class=per_class)


def torchrun(*args, cwd, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_train_cli_under_torchrun_trains_one_model_on_two_processes(tmp_path):
    data = make_folder(tmp_path / "data")
    results = tmp_path / "results"
    results.mkdir()
    run = tmp_path / "run"
    # --model takes a saved folder too: a tiny one keeps this test about torchrun, not about compute.
    save_pretrained(build_model(ModelConfig(architecture=None, num_classes=3, num_layers=[1, 1, 1, 1])), tmp_path / "tiny")
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    result = torchrun(
        str(tmp_path / "worker.py"), str(results),
        "--data", str(data), "--model", str(tmp_path / "tiny"), "--epochs", "2", "--freeze-epochs", "1",
        "--batch-size", "3", "--lr", "2e-3", "--image-size", "16", "--device", "cpu", "--out", str(run),
        "--num-workers", "0", "--no-progress", "--val-fraction", "0.3", "--test-fraction", "0.2",
        "--splits", str(results / "splits.json"),
        cwd=tmp_path,
    )
    assert result.stdout.count("Run folder:") == 1  # rank 0 alone reports

    rank0, rank1 = (torch.load(results / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    report0, report1 = (json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1))
    assert report0["status"] == report1["status"] == 0 and report0["world_size"] == 2
    # Metrics are all-reduced: both ranks report the same numbers, over the whole split.
    splits = load_splits(data, image_size=16, val_fraction=0.3, test_fraction=0.2, manifest=results / "splits.json")
    timing = {"train_images_per_s", "train_time_s"}  # each rank times itself

    def metrics(report):
        return [{k: v for k, v in row.items() if k not in timing} for row in report["history"]]

    assert metrics(report0) == metrics(report1)
    assert report0["val"] == report1["val"] and report0["val"]["num_samples"] == len(splits["val"]) == 9
    # The training set (15 images) is sharded: 8 per rank (one padded), batches of 3 -> 2 full steps, last dropped.
    assert report0["steps"] == 2
    assert report1["written"] == []
    assert {"checkpoint.pt", "model.safetensors", "config.json", "history.json", "curves.png", "splits.json"} <= set(
        report0["written"])

    # The run folder's recorded metrics are what a single process measures on the saved model.
    model = resnetzoo.create(run)
    assert model.config.class_names == ["class_0", "class_1", "class_2"]
    torch.set_num_threads(1)
    check = Trainer(splits, model, device="cpu", epochs=1, batch_size=3, lr=1e-3, num_workers=0, progress=False)
    single = check.evaluate("val")
    recorded = model.config.extra["metrics"]
    assert single["acc1"] == recorded["val"]["acc1"] and single["num_samples"] == recorded["val"]["num_samples"]
    assert single["loss"] == pytest.approx(recorded["val"]["loss"], abs=1e-5)
    assert check.evaluate("test")["acc1"] == recorded["test"]["acc1"]
    assert model.config.extra["training"]["world_size"] == 2


def test_one_named_gpu_for_several_local_processes_is_refused_before_nccl(monkeypatch):
    from resnetzoo import distributed

    # What torchrun --nproc_per_node=2 sets for the second process; no process group is started.
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(distributed.DistributedError, match=r"device='cuda:0' names one GPU.*2 processes.*'cuda'"):
        distributed.init_distributed("cuda:0")
    assert not torch.distributed.is_initialized()
