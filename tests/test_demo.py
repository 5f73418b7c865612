"""`make demo`'s pipeline at a tiny scale: a few digits per class, one epoch, export and predictor included."""

from __future__ import annotations

import json

import pytest

from resnetzoo.demo import DemoSettings, _clear_previous_demo, default_out_dir, main, run_demo, write_digits_folder


def test_digits_are_written_as_an_image_folder(tmp_path):
    root = write_digits_folder(tmp_path / "digits", limit_per_class=3)
    assert sorted(p.name for p in root.iterdir()) == [str(d) for d in range(10)]
    assert all(len(list((root / str(d)).glob("*.png"))) == 3 for d in range(10))


@pytest.mark.slow
def test_demo_pipeline_runs_end_to_end_at_tiny_scale(tmp_path, capsys):
    settings = DemoSettings(out_dir=tmp_path / "demo", epochs=1, batch_size=16, limit_per_class=8,
                            benchmark=False, accuracy_goal=None)
    summary = run_demo(settings)
    out = capsys.readouterr().out
    assert "from scratch" in out  # no cached weights in the test's private TORCH_HOME, and the demo says so
    for step in range(1, 7):
        assert f"[{step}/6]" in out
    assert "Skipped (--no-benchmark)." in out
    demo = tmp_path / "demo"
    for produced in ("run/model.safetensors", "run/config.json", "predictions.png", "export/model.onnx",
                     "export/model.torchscript.pt", "export/manifest.json", "summary.json"):
        assert (demo / produced).is_file(), produced
    assert 0.0 <= summary["test"]["acc1"] <= 1.0
    assert summary["export"]["predictor_exit_code"] == 0
    assert json.loads((demo / "summary.json").read_text())["test"]["acc1"] == summary["test"]["acc1"]


def test_demo_refuses_a_missing_data_folder(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_a_new_demo_run_replaces_the_previous_one_but_keeps_the_split_of_the_same_data(tmp_path, capsys):
    out = tmp_path / "demo"
    data = tmp_path / "data"
    for name in ("run", "export", "benchmark"):
        (out / name).mkdir(parents=True)
        (out / name / "stale.txt").write_text("old")
    (out / "splits.json").write_text("{}")
    (out / "summary.json").write_text(json.dumps({"data": str(data)}))

    _clear_previous_demo(out, data)
    assert sorted(p.name for p in out.iterdir()) == ["splits.json"]  # same data: same split
    assert "Replacing the previous demo run" in capsys.readouterr().out

    (out / "summary.json").write_text(json.dumps({"data": str(data)}))
    _clear_previous_demo(out, tmp_path / "other_data")
    assert list(out.iterdir()) == []  # other data: the old split manifest goes too


def test_default_output_folder_is_one_per_dataset(tmp_path):
    assert default_out_dir(None).as_posix() == "demo_output/digits"
    assert default_out_dir(tmp_path / "PokemonData").as_posix() == "demo_output/PokemonData"


def test_own_data_with_a_weights_file_trains_and_uses_the_default_preprocessing(tmp_path, capsys):
    # A weights file records no preprocessing: the split must not try to read a transform from a path.
    import torch
    from images import write_color_classes

    import resnetzoo

    weights = tmp_path / "start.pth"
    torch.save(resnetzoo.create("resnet18", num_classes=3).state_dict(), weights)
    data = write_color_classes(tmp_path / "photos", per_class=6, size=32)
    settings = DemoSettings(data=data, out_dir=tmp_path / "demo", model="resnet18", pretrained=str(weights), epochs=1,
                            batch_size=8, image_size=32, export=False, benchmark=False)
    summary = run_demo(settings)
    assert 0.0 <= summary["test"]["acc1"] <= 1.0
    assert summary["test"]["num_samples"] > 0
    assert (tmp_path / "demo" / "run" / "model.safetensors").is_file()
