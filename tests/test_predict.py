"""predict(), the prediction grid and the predict CLI, on a tiny run folder made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from images import write_color_classes
from PIL import Image

import resnetzoo
from resnetzoo import plots
from resnetzoo.config import ModelConfig, build_model
from resnetzoo.data import BrokenImageError, load_splits
from resnetzoo.hub import save_pretrained
from resnetzoo.predict import Prediction, draw_prediction_grid, main, predict
from resnetzoo.train import Trainer
from resnetzoo.transforms import eval_transform


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder trained for one epoch on three colour classes."""
    root = tmp_path_factory.mktemp("predict")
    write_color_classes(root / "data", base=60, boost=180)
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture=None, num_classes=3, num_layers=[1, 1, 1, 1]))
    splits = load_splits(root / "data", image_size=16, val_fraction=0.25, test_fraction=0.0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    Trainer(splits, model, device="cpu", epochs=1, batch_size=4, lr=1e-3, num_workers=0, progress=False,
            out_dir=root / "run").train()
    torch.set_num_threads(previous)
    return root


def test_predictions_are_the_softmax_of_the_saved_model(run):
    files = sorted((run / "data").rglob("*.png"))[:5]
    predictions = predict(run / "run", files, topk=2)
    model = resnetzoo.create(run / "run").eval()
    transform = eval_transform(model.config)
    with torch.no_grad():
        probabilities = model(torch.stack([transform(Image.open(f).convert("RGB")) for f in files])).softmax(1)
    for prediction, row, file in zip(predictions, probabilities, files, strict=True):
        values, indices = row.topk(2)
        assert prediction.source == str(file)
        assert prediction.indices == indices.tolist()
        assert prediction.labels == [["blue", "green", "red"][i] for i in indices.tolist()]
        np.testing.assert_allclose(prediction.probabilities, values.numpy(), atol=1e-6)
    assert len(predict(run / "run", files[:1], topk=10)[0].labels) == 3  # at most the number of classes


def test_a_broken_image_is_named_in_the_error(run, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BrokenImageError, match="bad.jpg"):
        predict(run / "run", [tmp_path / "bad.jpg"])


def test_grid_titles_show_prediction_truth_and_correctness(monkeypatch, tmp_path):
    seen = {}

    def capture(images, titles, path, colors=None, ncols=None):
        seen.update(images=images, titles=titles, colors=colors)
        return path

    monkeypatch.setattr(plots, "plot_image_grid", capture)
    images = [Image.new("RGB", (8, 8), c) for c in ("red", "blue", "gray")]
    predictions = [Prediction("a", ["red"], [0], [0.9], "red"), Prediction("b", ["red"], [0], [0.6], "blue"),
                   Prediction("c", ["green"], [1], [0.5])]
    draw_prediction_grid(images, predictions, tmp_path / "grid.png")
    assert seen["titles"] == ["red (90%)\ntrue: red", "red (60%)\ntrue: blue", "green (50%)"]
    assert seen["colors"] == ["green", "red", "black"]


def test_predict_cli_prints_topk_and_draws_the_grid(run, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    grid = tmp_path / "predictions.png"
    status = main([str(run / "run"), str(run / "data"), str(tmp_path / "bad.png"), "--topk", "2", "--grid", str(grid)])
    captured = capsys.readouterr()
    assert status == 1  # one image could not be read; the others were still classified
    assert "bad.png" in captured.err
    assert captured.out.count("%") == 2 * 12
    assert "(true: red)" in captured.out and "acc@1 on 12 labelled images" in captured.out
    with Image.open(grid) as figure:
        assert figure.format == "PNG" and figure.width > 300


def test_predict_cli_with_a_missing_model_is_a_clear_error(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert main([str(tmp_path / "no-run"), str(tmp_path / "x.png")]) == 2
    assert "error:" in capsys.readouterr().err


def _documented_commands(module: str) -> list[list[str]]:
    """Every ``python -m MODULE ...`` / ``torchrun ... -m MODULE ...`` command in the docs, as argv lists."""
    import shlex
    from pathlib import Path

    commands = []
    for doc in ("fine-tuning.md", "multi-gpu.md"):
        text = (Path(__file__).resolve().parents[1] / "docs" / doc).read_text()
        for block in text.split("```bash")[1:]:
            for command in block.split("```", 1)[0].replace("\\\n", " ").splitlines():
                words = shlex.split(command.split(" #", 1)[0])
                if f"-m={module}" in words or (module in words and "-m" in words):
                    commands.append(words[words.index(module) + 1 :])
    return commands


@pytest.mark.parametrize("module", ["resnetzoo.train", "resnetzoo.predict"])
def test_commands_in_the_docs_parse(module):
    from resnetzoo import predict as predict_module
    from resnetzoo import train as train_module

    parser = {"resnetzoo.train": train_module._parser, "resnetzoo.predict": predict_module._parser}[module]()
    commands = _documented_commands(module)
    assert commands
    for argv in commands:
        parser.parse_args([word for word in argv if word != "..."])  # exits (fails the test) on an option the CLI does not have


def test_predict_stops_at_the_first_broken_image_and_names_it(run, tmp_path):
    good = sorted((run / "data").rglob("*.png"))[0]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(BrokenImageError, match="broken.png") as caught:
        predict(run / "run", [good, tmp_path / "broken.png", good])
    assert str(good) not in str(caught.value)


@pytest.mark.parametrize("kind", ["folder is a file", "under /proc"])
def test_predict_cli_refuses_an_unwritable_grid_before_loading_anything(tmp_path, capsys, kind):
    if kind == "folder is a file":
        (tmp_path / "file").write_text("")
        grid = tmp_path / "file" / "grid.png"
    else:
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux /proc")
        grid = Path("/proc/resnetzoo-test/grid.png")
    # The model does not exist either: the --grid error must come first.
    assert main([str(tmp_path / "no-run"), str(tmp_path / "x.png"), "--grid", str(grid)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "--grid" in err


def test_an_image_given_alone_and_inside_a_folder_is_predicted_once(run, capsys):
    image = run / "data" / "red" / "00.png"
    assert main([str(run / "run"), str(image), str(run / "data"), str(image), "--topk", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{image}  (true: red)")  # kept where it was first given
    assert out.count("%") == 2 * 12 and "acc@1 on 12 labelled images" in out


def test_a_bare_architecture_name_warns_that_its_weights_are_random(tmp_path, capsys):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "x.png")
    assert main(["resnet18", str(tmp_path / "x.png"), "--topk", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RANDOM" in err and "resnet18" in err


def test_predict_help_says_what_model_accepts(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "run folder" in help_text and "hf-hub:org/name" in help_text and "RANDOM weights" in help_text


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_predict_runs_a_model_saved_in_half_precision(run, tmp_path, dtype):
    model = resnetzoo.create(run / "run").to(dtype)
    save_pretrained(model, tmp_path / "half")
    files = sorted((run / "data").rglob("*.png"))[:2]
    predictions = predict(tmp_path / "half", files, topk=1)  # float32 images used to meet half weights and fail
    assert [len(p.labels) for p in predictions] == [1, 1]


def test_predict_leaves_a_given_model_on_its_device_and_dtype(run):
    model = resnetzoo.create(run / "run").to(torch.float64)
    files = sorted((run / "data").rglob("*.png"))[:1]
    moved = []
    original = model.to
    model.to = lambda *args, **kwargs: moved.append(args) or original(*args, **kwargs)
    predict(model, files, topk=1)  # a CUDA model used to be moved to the CPU here
    assert moved == []
    assert next(model.parameters()).dtype == torch.float64
    # A device passed explicitly still moves it, as asked.
    predict(model, files, topk=1, device="cpu")
    assert moved == [("cpu",)]


def test_pil_images_are_converted_like_files(run, tmp_path):
    # A 16-bit grey image: convert("RGB") clips it to white; the file path scales it onto 8 bits.
    pixels = (np.arange(400, dtype=np.uint16).reshape(20, 20) * 100)
    Image.fromarray(pixels).save(tmp_path / "grey16.png")
    from_file = predict(run / "run", [tmp_path / "grey16.png"], topk=3)[0]
    from_pil = predict(run / "run", [Image.open(tmp_path / "grey16.png")], topk=3)[0]
    assert from_pil.indices == from_file.indices
    np.testing.assert_allclose(from_pil.probabilities, from_file.probabilities, atol=1e-6)


def test_predict_cli_decodes_one_batch_at_a_time_and_keeps_only_the_grid_images(run, tmp_path, capsys, monkeypatch):
    import resnetzoo.predict as predict_module

    batches, grids = [], []
    real_predict = predict_module.predict
    monkeypatch.setattr(predict_module, "predict",
                        lambda model, images, **kwargs: batches.append(len(images)) or real_predict(model, images,
                                                                                                   **kwargs))
    monkeypatch.setattr(predict_module, "draw_prediction_grid",
                        lambda images, predictions, path: grids.append((len(images), len(predictions))) or path)
    status = main([str(run / "run"), str(run / "data"), "--batch-size", "5", "--grid", str(tmp_path / "g.png"),
                   "--grid-max", "7"])
    assert status == 0
    assert batches == [5, 5, 2]  # 12 images, never more than one batch decoded at once
    assert grids == [(7, 7)]
    out = capsys.readouterr().out
    assert out.count("%") == 12 * 3 and "acc@1 on 12 labelled images" in out  # top-5 capped at the 3 classes
