"""The Trainer and the training CLI, on tiny models and tiny image folders (CPU)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from images import write_color_classes

import resnetzoo
from resnetzoo.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from resnetzoo.config import ModelConfig, build_model
from resnetzoo.data import load_splits
from resnetzoo.train import Trainer, TrainError, main

FAST = {"device": "cpu", "num_workers": 0, "progress": False, "warmup_epochs": 0}


def tiny_model(num_classes=3, seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(architecture=None, num_classes=num_classes, num_layers=[1, 1, 1, 1]))


def make_folder(root, num_classes=3, per_class=6, size=20):
    """Classes ``class_0``, ``class_1``, ... told apart by their dominant colour channel, with noise."""
    return write_color_classes(root, [f"class_{label}" for label in range(num_classes)], per_class=per_class, size=size)


@pytest.fixture
def splits(tmp_path):
    return load_splits(make_folder(tmp_path / "data"), image_size=16, val_fraction=0.34, test_fraction=0.0)


class TensorImages(torch.utils.data.Dataset):
    """A fixed batch as a dataset: no augmentation, so numbers can be computed by hand."""

    def __init__(self, images, labels, classes):
        self.images, self.labels, self.classes = images, labels, classes

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], int(self.labels[index])


def test_tiny_model_overfits_a_tiny_batch():
    torch.manual_seed(0)
    images = torch.randn(8, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    data = TensorImages(images, labels, ["a", "b", "c", "d"])
    trainer = Trainer({"train": data}, tiny_model(4), epochs=25, batch_size=8, lr=3e-3, label_smoothing=0.0,
                      weight_decay=0.0, scheduler="constant", **FAST)
    history = trainer.train()
    assert history[-1]["train_loss"] < 0.1 * history[0]["train_loss"]
    assert trainer.evaluate(data)["acc1"] == 1.0


def test_evaluate_matches_a_hand_computation():
    torch.manual_seed(1)
    images = torch.randn(10, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0, 1, 2])
    data = TensorImages(images, labels, [str(i) for i in range(7)])
    model = tiny_model(7)
    trainer = Trainer({"train": data}, model, epochs=1, batch_size=4, lr=1e-3, eval_batch_size=3, **FAST)
    metrics = trainer.evaluate(data)

    model.eval()
    with torch.no_grad():
        logits = model(images)
    ranked = logits.argsort(dim=1, descending=True)
    expected_acc1 = (ranked[:, 0] == labels).double().mean().item()
    expected_acc5 = (ranked[:, :5] == labels[:, None]).any(dim=1).double().mean().item()
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-5)
    assert metrics["acc1"] == pytest.approx(expected_acc1, abs=1e-12)
    assert metrics["acc5"] == pytest.approx(expected_acc5, abs=1e-12)
    assert metrics["num_samples"] == 10
    assert model.training is False  # evaluate restores the mode it found


def test_run_folder_rebuilds_the_best_model_with_its_metadata(tmp_path, fake_published_weights):
    record, payload = fake_published_weights("resnet18")
    import hashlib

    data = make_folder(tmp_path / "data", per_class=5, size=24)
    model = resnetzoo.create("resnet18", pretrained=True, num_classes=3)
    splits = load_splits(data, image_size=16, val_fraction=0.2, test_fraction=0.2, weights=model.config)
    run = tmp_path / "run"
    trainer = Trainer(splits, model, epochs=2, batch_size=4, lr=1e-3, out_dir=run, **FAST)
    trainer.train()

    rebuilt = resnetzoo.create(run)
    best = trainer.best_state_dict()
    for key, value in rebuilt.state_dict().items():
        assert torch.equal(value, best[key]), key
    config = rebuilt.config
    assert config.architecture == "resnet18" and config.num_classes == 3
    assert config.class_names == ["class_0", "class_1", "class_2"]
    # resnet18 has V1 weights only: resize 256 / crop 224, rescaled to the 16-pixel crop used here.
    assert (config.eval_transform["resize_size"], config.eval_transform["crop_size"]) == (18, 16)
    assert config.base_weights == record.full_name
    assert config.base_weights_sha256 == hashlib.sha256(payload).hexdigest()
    assert config.extra["training"]["lr"] == 1e-3 and config.extra["training"]["epochs"] == 2
    metrics = config.extra["metrics"]
    assert metrics["best_epoch"] == trainer.best["epoch"]
    assert metrics["val"]["acc1"] == trainer.best["acc1"]
    assert metrics["test"] == trainer.test_metrics and metrics["test"]["num_samples"] == len(splits["test"])
    # The saved model gives the numbers recorded for it.
    check = Trainer(splits, rebuilt, epochs=1, batch_size=4, lr=1e-3, **FAST)
    assert check.evaluate("val")["acc1"] == pytest.approx(metrics["val"]["acc1"])
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert (run / "history.csv").read_text().count("\n") == 3
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run / "splits.json").read_text())["counts"] == {"train": 9, "val": 3, "test": 3}


class Interrupted(Exception):
    pass


def _train_until(splits, out_dir, stop_after, **options):
    """Run until ``stop_after`` epochs are checkpointed, then fail as a crash would."""
    trainer = Trainer(splits, tiny_model(), out_dir=out_dir, **options)
    original = trainer._save_state

    def save_then_crash(stopped_early):
        original(stopped_early)
        if trainer.epoch == stop_after:
            raise Interrupted

    trainer._save_state = save_then_crash
    with pytest.raises(Interrupted):
        trainer.train()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_run_ends_with_bitwise_the_same_weights(splits, tmp_path, num_workers):
    options = {**FAST, "num_workers": num_workers, "epochs": 2, "batch_size": 4, "lr": 2e-3, "warmup_epochs": 0.5,
               "mixup_alpha": 0.4, "ema_decay": 0.9}
    straight = Trainer(splits, tiny_model(), out_dir=tmp_path / "straight", **options)
    straight.train()

    _train_until(splits, tmp_path / "resumed", stop_after=1, **options)
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT_NAME)["epoch"] == 1
    torch.manual_seed(12345)  # whatever the process did meanwhile must not matter
    resumed = Trainer(splits, tiny_model(seed=7), out_dir=tmp_path / "resumed", resume=True, **options)
    resumed.train()

    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [row["train_loss"] for row in straight.history] == [row["train_loss"] for row in resumed.history]


def test_resume_refuses_other_options(splits, tmp_path):
    _train_until(splits, tmp_path / "run", stop_after=1, epochs=2, batch_size=4, lr=1e-3, **FAST)
    with pytest.raises(TrainError, match="lr: run 0.001, now 0.002"):
        Trainer(splits, tiny_model(), out_dir=tmp_path / "run", resume=True, epochs=2, batch_size=4, lr=2e-3, **FAST)


def test_corrupt_checkpoint_is_an_error_not_a_fresh_start(splits, tmp_path):
    run = tmp_path / "run"
    _train_until(splits, run, stop_after=1, epochs=2, batch_size=4, lr=1e-3, **FAST)
    payload = (run / CHECKPOINT_NAME).read_bytes()
    (run / CHECKPOINT_NAME).write_bytes(payload[: len(payload) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        Trainer(splits, tiny_model(), out_dir=run, resume=True, epochs=2, batch_size=4, lr=1e-3, **FAST)
    (run / CHECKPOINT_NAME).unlink()
    with pytest.raises(CheckpointError, match="No checkpoint"):
        Trainer(splits, tiny_model(), out_dir=run, resume=True, epochs=2, batch_size=4, lr=1e-3, **FAST)


def test_a_finished_run_is_not_overwritten_by_accident(splits, tmp_path):
    Trainer(splits, tiny_model(), out_dir=tmp_path / "run", epochs=1, batch_size=4, lr=1e-3, **FAST).train()
    with pytest.raises(TrainError, match="already holds a training run"):
        Trainer(splits, tiny_model(), out_dir=tmp_path / "run", epochs=1, batch_size=4, lr=1e-3, **FAST)
    Trainer(splits, tiny_model(), out_dir=tmp_path / "run", overwrite=True, epochs=1, batch_size=4, lr=1e-3, **FAST)


def test_model_and_data_must_agree_on_classes(splits):
    with pytest.raises(TrainError, match="num_classes=3"):
        Trainer(splits, tiny_model(5), epochs=1, batch_size=4, lr=1e-3, **FAST)


def test_unknown_or_invalid_options_are_refused(splits):
    with pytest.raises(TypeError, match="learning_rate"):
        Trainer(splits, tiny_model(), learning_rate=0.1, **FAST)
    with pytest.raises(TrainError, match="optimizer"):
        Trainer(splits, tiny_model(), optimizer="adam", **FAST)
    with pytest.raises(TrainError, match="fp16"):
        Trainer(splits, tiny_model(), amp="fp16", **FAST)


def test_frozen_epochs_train_only_the_head(splits):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(splits, model, epochs=1, freeze_epochs=1, batch_size=4, lr=1e-2, **FAST)
    trainer.train()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BatchNorm statistics of the backbone included


def test_early_stopping_ends_a_run_that_stopped_improving(splits, tmp_path):
    trainer = Trainer(splits, tiny_model(), out_dir=tmp_path / "run", epochs=6, early_stopping_patience=2,
                      batch_size=4, lr=1e-3, **FAST)
    # A validation score that never improves after the first epoch.
    trainer.evaluate = lambda split="val", model=None: {"loss": 1.0, "acc1": 0.5, "acc5": 1.0, "num_samples": 6}
    history = trainer.train()
    assert len(history) == 3 and trainer.best["epoch"] == 1
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["stopped_early"] is True


def test_without_a_val_split_the_best_epoch_is_reported_by_train_loss_not_as_an_accuracy(splits, caplog):
    trainer = Trainer({"train": splits["train"]}, tiny_model(), epochs=4, early_stopping_patience=1, batch_size=4,
                      lr=1e-3, **FAST)
    losses = iter([1.0, 0.5, 0.7, 0.1])
    train_one_epoch = trainer._train_one_epoch
    trainer._train_one_epoch = lambda epoch, frozen: {**train_one_epoch(epoch, frozen), "loss": next(losses)}
    with caplog.at_level("INFO", logger="resnetzoo.train"):
        trainer.train()
    assert trainer.best["acc1"] is None and trainer.best["epoch"] == 2  # not minus the loss, named acc1
    assert trainer.best["selected_by"] == "train loss"
    assert "no better train loss for 1 epochs" in caplog.text and "validation" not in caplog.text


def test_resuming_an_older_checkpoint_without_val_moves_the_train_loss_out_of_acc1(splits, tmp_path):
    options = dict(epochs=1, batch_size=4, lr=1e-3, **FAST)
    Trainer({"train": splits["train"]}, tiny_model(), out_dir=tmp_path / "run", **options).train()
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    state["best"] = {"acc1": -0.75, "epoch": 1, "metrics": None}  # as written before best["score"] existed
    save_checkpoint(tmp_path / "run" / CHECKPOINT_NAME, {k: v for k, v in state.items() if k != "format"})
    trainer = Trainer({"train": splits["train"]}, tiny_model(), out_dir=tmp_path / "run", resume=True, **options)
    assert trainer.best == {"acc1": None, "epoch": 1, "metrics": None, "score": -0.75, "selected_by": "train loss"}


def test_gradient_accumulation_and_clipping_count_updates(splits):
    trainer = Trainer(splits, tiny_model(), epochs=2, batch_size=2, grad_accum_steps=2, clip_grad_norm=0.5, lr=1e-3, **FAST)
    trainer.train()
    steps = len(trainer.train_loader)
    assert trainer.global_step == 2 * ((steps + 1) // 2)


@pytest.mark.parametrize(("size", "world_size"), [(2, 5), (1, 4), (7, 3)])
def test_every_rank_gets_the_same_number_of_samples_even_with_more_ranks_than_samples(size, world_size):
    # A short rank would run fewer steps than the others and hang DDP's all-reduce.
    from resnetzoo.train import _ShardedEpochSampler

    shards = [list(_ShardedEpochSampler(size, rank, world_size, seed=0, with_epoch=False)) for rank in range(world_size)]
    length = len(_ShardedEpochSampler(size, 0, world_size, seed=0))
    assert [len(shard) for shard in shards] == [length] * world_size
    assert set().union(*shards) == set(range(size))


class FirstItemsBroken(TensorImages):
    """The first ``broken`` items read are unreadable (``None``), whatever their index: the first batch fails."""

    def __init__(self, *args, broken):
        super().__init__(*args)
        self.broken = broken

    def __getitem__(self, index):
        if self.broken > 0:
            self.broken -= 1
            return None
        return super().__getitem__(index)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_first_batch_of_broken_images_still_advances_the_schedule(accumulate):
    torch.manual_seed(0)
    data = FirstItemsBroken(torch.randn(8, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), ["a", "b", "c"], broken=2)
    trainer = Trainer({"train": data}, tiny_model(), epochs=1, batch_size=2, grad_accum_steps=accumulate, lr=1e-3,
                      **FAST)
    trainer.train()
    assert data.broken == 0  # the first batch did fail
    assert trainer.global_step == trainer.scheduler.last_epoch == 4 // accumulate


def test_placeholder_batch_is_the_first_readable_image_twice_and_draws_no_random_numbers():
    images = torch.randn(3, 3, 16, 16)
    data = FirstItemsBroken(images, torch.tensor([0, 1, 2]), ["a", "b", "c"], broken=1)
    trainer = Trainer({"train": data}, tiny_model(), epochs=1, batch_size=2, **FAST)
    state = torch.get_rng_state()
    placeholder_images, placeholder_labels = trainer._placeholder_batch(torch.contiguous_format)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(placeholder_images, images[[1, 1]]) and placeholder_labels.tolist() == [1, 1]


def test_two_accumulated_batches_of_two_update_like_one_batch_of_four():
    """The loss of each micro-batch is divided by grad_accum_steps, so the update is that of the whole batch."""
    torch.manual_seed(0)
    data = TensorImages(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]), ["a", "b", "c"])
    initial = tiny_model().state_dict()
    updated = []
    for batch_size, accumulate in [(4, 1), (2, 2)]:
        model = tiny_model()
        trainer = Trainer({"train": data}, model, epochs=1, batch_size=batch_size, grad_accum_steps=accumulate, lr=0.1,
                          optimizer="sgd", momentum=0.0, weight_decay=0.0, label_smoothing=0.0, scheduler="constant",
                          **FAST)
        # BatchNorm in eval mode: its batch statistics would otherwise differ between batches of 2 and of 4.
        trainer._train_mode = lambda frozen, model=model: model.eval()
        trainer.train()
        assert trainer.global_step == 1
        updated.append(model.state_dict())
    whole, accumulated = updated
    assert any((whole[k] - initial[k]).abs().max() > 1e-3 for k in whole)  # the update is not negligible
    for key in whole:
        torch.testing.assert_close(accumulated[key], whole[key], atol=1e-6, rtol=0, msg=key)


def test_clipping_bounds_the_update(splits):
    """With SGD without momentum, one update moves the weights by at most lr * max_norm."""
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(splits, model, epochs=1, batch_size=32, clip_grad_norm=1e-3, lr=1.0, optimizer="sgd", momentum=0.0,
                      weight_decay=0.0, scheduler="constant", **FAST)
    trainer.train()
    assert trainer.global_step == 1
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])
    assert moved.norm().item() <= 1e-3 * (1 + 1e-4)


def test_ema_weights_are_evaluated_and_saved(splits, tmp_path):
    trainer = Trainer(splits, tiny_model(), out_dir=tmp_path / "run", epochs=2, batch_size=4, lr=5e-3, ema_decay=0.5, **FAST)
    trainer.train()
    saved = resnetzoo.create(tmp_path / "run").state_dict()
    best = trainer.best_state_dict()
    assert all(torch.equal(saved[k], best[k]) for k in saved)
    assert not all(torch.equal(trainer.ema.module.state_dict()[k], trainer.model.state_dict()[k]) for k in saved)


def test_train_cli_end_to_end(tmp_path, fake_published_weights, capsys):
    fake_published_weights("resnet18")
    data = make_folder(tmp_path / "data", per_class=5, size=24)
    run = tmp_path / "run"
    status = main(["--data", str(data), "--model", "resnet18", "--pretrained", "--epochs", "1", "--batch-size", "4",
                   "--lr", "1e-3", "--image-size", "16", "--device", "cpu", "--out", str(run), "--num-workers", "0",
                   "--no-progress", "--val-fraction", "0.2", "--test-fraction", "0.2"])
    assert status == 0
    assert "Test acc@1" in capsys.readouterr().out
    model = resnetzoo.create(run)
    assert model.config.class_names == ["class_0", "class_1", "class_2"]
    assert model.config.base_weights == "resnet18.IMAGENET1K_V1"
    # --resume of a finished run completes at once; the CLI rebuilds the model from the checkpoint.
    assert main(["--data", str(data), "--epochs", "1", "--batch-size", "4", "--lr", "1e-3", "--image-size", "16",
                 "--device", "cpu", "--out", str(run), "--num-workers", "0", "--no-progress", "--resume",
                 "--val-fraction", "0.2", "--test-fraction", "0.2"]) == 0
    # A clear error, not a traceback, for a folder that is not there.
    assert main(["--data", str(tmp_path / "missing"), "--model", "resnet18", "--out", str(tmp_path / "r2")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_cli_help_documents_every_option(capsys):
    from resnetzoo.train import _parser

    undocumented = [action.option_strings for action in _parser()._actions if not action.help]
    assert undocumented == []
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for option in ("--data", "--model", "--pretrained", "--epochs", "--batch-size", "--lr", "--image-size", "--device",
                   "--out", "--resume", "--ema-decay", "--mixup-alpha", "--freeze-epochs", "--patience", "--amp"):
        assert option in text


def test_mixup_and_cutmix_train_with_soft_targets(splits):
    trainer = Trainer(splits, tiny_model(), epochs=1, batch_size=4, lr=1e-3, mixup_alpha=0.2, cutmix_alpha=1.0, **FAST)
    images = torch.zeros(4, 3, 16, 16)
    mixed_images, soft_targets = trainer.mix(images, torch.tensor([0, 1, 2, 0]))
    assert soft_targets.shape == (4, 3) and torch.allclose(soft_targets.sum(1), torch.ones(4))
    history = trainer.train()
    assert np.isfinite(history[0]["train_loss"])


@pytest.mark.gpu
def test_cuda_training_uses_mixed_precision_and_channels_last(splits, tmp_path):
    trainer = Trainer(splits, tiny_model(), device="cuda", epochs=2, batch_size=4, lr=1e-3, num_workers=2,
                      progress=False, out_dir=tmp_path / "run")
    assert trainer.amp_dtype in (torch.bfloat16, torch.float16) and trainer.channels_last
    assert trainer.train_loader.pin_memory
    trainer.train()
    rebuilt = resnetzoo.create(tmp_path / "run")  # saved on the CPU, in the standard memory format
    best = trainer.best_state_dict()
    assert all(torch.equal(rebuilt.state_dict()[k], best[k].cpu()) for k in best)
    assert rebuilt.config.extra["training"]["amp_dtype"] in ("bfloat16", "float16")


@pytest.mark.gpu
def test_cuda_epoch_time_waits_for_the_gpu(splits, monkeypatch):
    synchronized = []
    original = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronized.append(device) or original(device))
    trainer = Trainer(splits, tiny_model(), device="cuda", epochs=1, batch_size=4, lr=1e-3, num_workers=0, progress=False)
    trainer.train()
    assert trainer.device in synchronized


def _fake_cuda(monkeypatch, capability, has_kwarg=True):
    """A CUDA device of ``capability`` that emulates bf16 below 8.0; returns the devices made current."""
    current = []

    @contextlib.contextmanager
    def device(index):
        current.append(index)
        yield

    def supported(including_emulation=True):
        return including_emulation or capability >= (8, 0)

    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported if has_kwarg else lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    return current


@pytest.mark.parametrize("has_kwarg", [True, False], ids=["torch-with-including_emulation", "older-torch"])
@pytest.mark.parametrize(("capability", "expected"), [((7, 0), torch.float16), ((8, 0), torch.bfloat16)])
def test_amp_auto_picks_bf16_only_where_the_gpu_computes_it_natively(monkeypatch, capability, expected, has_kwarg):
    from types import SimpleNamespace

    current = _fake_cuda(monkeypatch, capability, has_kwarg)
    fake = SimpleNamespace(recipe=SimpleNamespace(amp="auto"), device=torch.device("cuda", 1))
    assert Trainer._amp_dtype(fake) == expected  # a V100 (7.0) emulates bf16 slowly: fp16 with a GradScaler
    assert current == [torch.device("cuda", 1)]  # asked about the trainer's device, not the current one


def test_images_that_break_during_training_are_skipped_and_counted(splits, caplog):
    broken = splits["train"].samples[:4]
    for path, _ in broken:
        with open(path, "wb") as handle:
            handle.write(b"\x89PNG\r\n\x1a\n broken after the scan")
    trainer = Trainer(splits, tiny_model(), epochs=2, batch_size=4, lr=1e-3, **FAST)
    with caplog.at_level("WARNING"):
        history = trainer.train()
    assert len(history) == 2 and np.isfinite(history[-1]["train_loss"])
    assert "4 images failed to load in epoch 1" in caplog.text and "4 images failed to load in epoch 2" in caplog.text
    assert all(path in caplog.text for path, _ in broken)


KILLED_WORKER = """
import os, sys, time
import torch

torch.set_num_threads(1)
from resnetzoo import train

real_fsync, saves = os.fsync, []


def fsync_that_stalls_in_the_second_checkpoint(fd):
    if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(".checkpoint.pt."):
        saves.append(fd)
        if len(saves) == 2:  # epoch 2's checkpoint is written but not yet renamed into place
            print("saving", flush=True)
            time.sleep(120)
    real_fsync(fd)


os.fsync = fsync_that_stalls_in_the_second_checkpoint
train.main(sys.argv[1:])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_run_killed_while_saving_resumes_to_the_same_weights(tmp_path):
    import signal
    import subprocess

    from resnetzoo.hub import save_pretrained

    data = make_folder(tmp_path / "data")
    save_pretrained(tiny_model(), tmp_path / "tiny")
    argv = ["--data", str(data), "--model", str(tmp_path / "tiny"), "--epochs", "3", "--batch-size", "4", "--lr", "2e-3",
            "--image-size", "16", "--device", "cpu", "--num-workers", "0", "--no-progress", "--val-fraction", "0.34",
            "--test-fraction", "0", "--splits", str(tmp_path / "splits.json")]
    process = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, *argv, "--out", str(tmp_path / "killed")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout.readline().strip() == "saving"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    assert load_checkpoint(tmp_path / "killed" / CHECKPOINT_NAME)["epoch"] == 1  # epoch 1's, whole

    assert main([*argv, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    assert main([*argv, "--out", str(tmp_path / "straight")]) == 0
    resumed = load_checkpoint(tmp_path / "killed" / CHECKPOINT_NAME)
    straight = load_checkpoint(tmp_path / "straight" / CHECKPOINT_NAME)
    assert resumed["epoch"] == straight["epoch"] == 3
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_progress_bar_shows_loss_accuracy_lr_and_speed(splits, capsys):
    options = {**FAST, "progress": True}
    Trainer(splits, tiny_model(), epochs=1, batch_size=4, lr=1e-3, **options).train()
    bar = capsys.readouterr().err
    assert "epoch 1/1" in bar and all(f"{name}=" in bar for name in ("loss", "acc", "lr", "img_s"))


def test_early_stopping_flag_is_named_like_the_option_and_keeps_its_short_alias():
    from resnetzoo.train import _parser

    common = ["--data", "d", "--out", "o"]
    assert _parser().parse_args([*common, "--early-stopping-patience", "3"]).patience == 3
    assert _parser().parse_args([*common, "--patience", "2"]).patience == 2


def test_every_option_in_the_docs_table_names_its_real_cli_flag():
    import re

    from resnetzoo.train import _parser

    text = (Path(__file__).resolve().parents[1] / "docs" / "fine-tuning.md").read_text()
    section = text.split("## Training options", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    flags = {flag for action in _parser()._actions for flag in action.option_strings}
    assert rows
    for row in rows:
        options, cli = re.findall(r"`([a-z_]+)`", row.split("|")[1]), re.findall(r"`(--[a-z-]+)`", row.split("|")[2])
        if "Python only" in row:
            continue
        assert cli and set(cli) <= flags, row
        for option in options:  # the flag is the option's name with dashes (or --no-NAME for a switched-on default)
            assert option.replace("_", "-") in {flag[2:].removeprefix("no-") for flag in cli}, row


@pytest.mark.parametrize("kind", ["a file", "under /proc"])
def test_train_cli_refuses_an_unwritable_out_before_reading_any_data(tmp_path, capsys, kind):
    if kind == "a file":
        out = tmp_path / "taken"
        out.write_text("not a folder")
    else:
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux /proc")
        out = Path("/proc/resnetzoo-test/run")
    # The data folder does not exist either: the --out error must come first.
    assert main(["--data", str(tmp_path / "missing"), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "--out" in err and "does not exist" not in err


def test_train_cli_with_cuda_but_no_gpu_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err


def test_loss_curve_title_names_only_what_the_training_loss_includes(splits, tmp_path, monkeypatch):
    from resnetzoo import plots

    titles = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: titles.append(figure.axes[0].get_title()))
    history = [{"epoch": 1, "train_loss": 1.0, "train_acc1": 0.5}]
    plots.plot_history(history, tmp_path / "curves.png")
    plots.plot_history(history, tmp_path / "curves.png", train_loss_includes=["label smoothing"])
    assert titles == ["Loss", "Loss (train: with label smoothing)"]
    smoothing_only = Trainer(splits, tiny_model(), epochs=1, batch_size=4, lr=1e-3, **FAST)
    assert smoothing_only._train_loss_includes() == ["label smoothing"]
    plain = Trainer(splits, tiny_model(), epochs=1, batch_size=4, lr=1e-3, label_smoothing=0.0, cutmix_alpha=1.0, **FAST)
    assert plain._train_loss_includes() == ["cutmix"]


def test_training_longer_is_a_new_run_that_starts_from_the_run_folder(tmp_path, monkeypatch):
    from resnetzoo import train
    from resnetzoo.hub import save_pretrained

    data = make_folder(tmp_path / "data", per_class=4)
    save_pretrained(tiny_model(), tmp_path / "tiny")
    cli = ["--data", str(data), "--epochs", "1", "--batch-size", "4", "--image-size", "16", "--device", "cpu",
           "--num-workers", "0", "--no-progress", "--val-fraction", "0.25", "--test-fraction", "0"]
    assert main([*cli, "--model", str(tmp_path / "tiny"), "--out", str(tmp_path / "run")]) == 0
    started_from = {}

    class Spy(Trainer):
        def __init__(self, datasets, model, **kwargs):
            started_from.update({k: v.clone() for k, v in model.state_dict().items()})
            super().__init__(datasets, model, **kwargs)

    monkeypatch.setattr(train, "Trainer", Spy)
    # The documented recipe (docs/fine-tuning.md, "Training longer"): --model RUN_DIR --out NEW_DIR.
    assert main([*cli, "--model", str(tmp_path / "run"), "--out", str(tmp_path / "more"), "--lr", "1e-4"]) == 0
    best = resnetzoo.create(tmp_path / "run").state_dict()
    assert started_from.keys() == best.keys()
    assert all(torch.equal(started_from[k], best[k]) for k in best)
    assert resnetzoo.create(tmp_path / "more").config.class_names == ["class_0", "class_1", "class_2"]
