"""Image-folder scanning, splitting, manifests, odd and broken images, transforms."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from resnetzoo import data
from resnetzoo.data import (
    DataError,
    EmptyClassError,
    ImageFolderSplit,
    SplitManifestError,
    collate_skipping_broken,
    load_image,
    load_splits,
)
from resnetzoo.transforms import eval_transform, eval_transform_config, train_transform
from resnetzoo.weights.records import weights_records


def write_image(path, color=(200, 30, 30), size=(20, 16), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt)
    return path


def make_folder(root, counts, size=(20, 16)):
    """A class folder per entry of ``counts``, each with that many small solid-colour PNGs."""
    for class_index, (name, count) in enumerate(counts.items()):
        for i in range(count):
            write_image(root / name / f"{i:03d}.png", color=(class_index * 60 % 256, i * 7 % 256, 100), size=size)
    return root


def split_paths(datasets):
    return {split: {path for path, _ in ds.samples} for split, ds in datasets.items()}


def test_split_is_deterministic_for_a_seed_and_changes_with_it(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 20, "b": 20})
    first = split_paths(load_splits(root, image_size=16, manifest=tmp_path / "m1.json"))
    again = split_paths(load_splits(root, image_size=16, manifest=tmp_path / "m2.json"))
    other = split_paths(load_splits(root, image_size=16, seed=1, manifest=tmp_path / "m3.json"))
    assert first == again
    assert first != other


def test_split_is_stratified_per_class_and_never_leaks(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 20, "b": 10, "c": 7, "d": 1})
    datasets = load_splits(root, image_size=16, val_fraction=0.2, test_fraction=0.1)
    paths = split_paths(datasets)
    assert not (paths["train"] & paths["val"]) and not (paths["train"] & paths["test"]) and not (paths["val"] & paths["test"])
    assert sum(len(p) for p in paths.values()) == 38
    expected = {"a": (14, 4, 2), "b": (7, 2, 1), "c": (5, 1, 1), "d": (1, 0, 0)}
    for name, (train, val, test) in expected.items():
        label = datasets["train"].classes.index(name)
        assert [datasets[s].targets.count(label) for s in ("train", "val", "test")] == [train, val, test], name
    assert datasets["train"].classes == ["a", "b", "c", "d"]


def test_manifest_records_the_split_and_is_reused_exactly(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 10, "b": 10})
    datasets = load_splits(root, image_size=16)
    manifest = json.loads((root / data.MANIFEST_NAME).read_text())
    for split in ("train", "val", "test"):
        assert sorted(str(root / p) for p in manifest["splits"][split]) == sorted(split_paths(datasets)[split])
    # A hand-edited manifest is honoured as written: it is the source of truth once it exists.
    moved = manifest["splits"]["train"].pop()
    manifest["splits"]["test"].append(moved)
    (root / data.MANIFEST_NAME).write_text(json.dumps(manifest))
    assert str(root / moved) in split_paths(load_splits(root, image_size=16))["test"]


def test_adding_images_never_moves_existing_ones(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 12, "b": 9})
    before = split_paths(load_splits(root, image_size=16))
    for i in range(12, 30):
        write_image(root / "a" / f"{i:03d}.png")
    write_image(root / "b" / "new.png")
    after_sets = split_paths(load_splits(root, image_size=16))
    for split in before:
        assert before[split] <= after_sets[split]
    # New files fill the per-class targets: 30 images of class "a" -> round(4.5) = 4 each in val and test.
    datasets = load_splits(root, image_size=16)
    label = datasets["train"].classes.index("a")
    assert [datasets[s].targets.count(label) for s in ("train", "val", "test")] == [22, 4, 4]


def test_manifest_made_with_other_settings_is_an_error(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    load_splits(root, image_size=16, seed=0)
    with pytest.raises(SplitManifestError, match="seed"):
        load_splits(root, image_size=16, seed=3)


def test_manifest_mismatch_names_every_setting_and_both_the_argument_and_the_flag(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    load_splits(root, image_size=16, seed=0)
    with pytest.raises(SplitManifestError) as caught:
        load_splits(root, image_size=16, seed=3)
    message = str(caught.value)
    assert "made with seed=0, val_fraction=0.15, test_fraction=0.15" in message
    assert "asks for seed=3, val_fraction=0.15, test_fraction=0.15" in message
    assert "manifest=" in message and "--splits" in message


def test_corrupt_manifest_is_an_error(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    (root / data.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(SplitManifestError, match="unreadable"):
        load_splits(root, image_size=16)


@pytest.mark.parametrize("edit", [
    lambda m: m["splits"].__setitem__("train", 7),  # not a list: used to be a bare TypeError
    lambda m: m["splits"]["train"].append(["a", "1.png"]),  # not a path: unhashable TypeError
    lambda m: m["splits"].__setitem__("trian", []),  # a misspelt split would be silently ignored
    lambda m: m["checked"].__setitem__(next(iter(m["checked"])), [1, 2]),  # too short: IndexError
    lambda m: m["checked"].__setitem__(next(iter(m["checked"])), 5),  # not a list: TypeError
    lambda m: m.__setitem__("checked", []),
], ids=["split-not-a-list", "path-not-a-string", "unknown-split", "checked-too-short", "checked-not-a-list",
        "checked-not-an-object"])
def test_malformed_manifest_is_an_error_naming_the_file(tmp_path, edit):
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3})
    load_splits(root, image_size=16)
    path = root / data.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(SplitManifestError, match="malformed") as raised:
        load_splits(root, image_size=16)
    assert str(path) in str(raised.value) and "delete the file" in str(raised.value)


def test_hidden_files_and_folders_are_ignored(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3})
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write_image(root / ".ipynb_checkpoints" / "x.png")
    write_image(root / "a" / ".ipynb_checkpoints" / "000-checkpoint.png")
    write_image(root / "__MACOSX" / "a" / "._000.png")
    datasets = load_splits(root, image_size=16)
    assert datasets["train"].classes == ["a", "b"]
    assert sum(len(d) for d in datasets.values()) == 6
    assert datasets["train"].skipped == []


def test_unreadable_files_are_reported_by_path_and_left_out(tmp_path, caplog):
    root = make_folder(tmp_path / "d", {"a": 4, "b": 4})
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / "empty.jpg").write_bytes(b"")
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good, format="JPEG")
    (root / "b" / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(png, format="PNG")
    corrupt = bytearray(png.getvalue())
    corrupt[100:140] = b"\xff" * 40
    (root / "b" / "corrupt.png").write_bytes(bytes(corrupt))
    with caplog.at_level(logging.WARNING, logger="resnetzoo.data"):
        datasets = load_splits(root, image_size=16)
    bad = {"a/notes.txt", "a/empty.jpg", "b/truncated.jpg", "b/corrupt.png"}
    assert {path for path, _ in datasets["train"].skipped} == bad
    assert all(not path.endswith(tuple(bad)) for d in datasets.values() for path, _ in d.samples)
    assert sum(len(d) for d in datasets.values()) == 8
    assert "Left out 4 of 12 files" in caplog.text and "b/truncated.jpg" in caplog.text
    manifest = json.loads((root / data.MANIFEST_NAME).read_text())
    assert {entry["path"] for entry in manifest["skipped"]} == bad


def test_class_folder_without_usable_images_is_a_clear_error(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 3})
    (root / "b").mkdir()
    (root / "b" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(EmptyClassError, match=r"b .*no usable image.*broken.png"):
        load_splits(root, image_size=16)


def test_missing_or_classless_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    write_image(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_splits(tmp_path / "flat")


def test_grayscale_palette_and_cmyk_become_rgb(tmp_path):
    gray = load_image(write_image(tmp_path / "g.png", color=77, mode="L"))
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (77, 77, 77)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").getpixel((0, 0)) == (10, 200, 30)
    cmyk = load_image(write_image(tmp_path / "c.jpg", color=(0, 255, 255, 0), mode="CMYK"))
    red, green, blue = cmyk.getpixel((2, 2))
    assert red > 240 and green < 15 and blue < 15  # cyan 0, magenta+yellow full = red


def test_transparent_pixels_become_white_not_their_hidden_colour(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    rgba.save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.getpixel((1, 1)) == (255, 255, 255)
    assert image.getpixel((0, 0)) == (10, 20, 30)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 50, 60, 70] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(tmp_path / "pt.png", transparency=0)
    image = load_image(tmp_path / "pt.png")
    assert image.getpixel((1, 1)) == (255, 255, 255) and image.getpixel((0, 0)) == (50, 60, 70)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = load_image(tmp_path / "deep.png")
    assert [image.getpixel((x, 0))[0] for x in range(4)] == [0, 64, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (30, 10), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))  # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = load_image(tmp_path / "rotated.jpg")
    assert upright.size == (10, 30)
    red, _, blue = upright.getpixel((5, 3))
    assert red > 200 and blue < 60  # red is now at the top


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    path = write_image(tmp_path / "big.png", size=(64, 64))
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(data.BrokenImageError, match="decompression bomb"):
        load_image(path)
    assert "decompression bomb" in data.check_image(path)


def test_file_broken_after_the_scan_is_skipped_and_logged_not_fatal(tmp_path, caplog):
    root = make_folder(tmp_path / "d", {"a": 4, "b": 4})
    dataset = load_splits(root, image_size=16, val_fraction=0, test_fraction=0)["train"]
    broken_path = dataset.samples[1][0]
    with open(broken_path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n broken later")
    with caplog.at_level(logging.WARNING, logger="resnetzoo.data"):
        loader = torch.utils.data.DataLoader(dataset, batch_size=8, collate_fn=collate_skipping_broken)
        images, labels, skipped = next(iter(loader))
    assert images.shape == (7, 3, 16, 16) and labels.shape == (7,) and skipped == 1
    assert broken_path in caplog.text


def test_seeded_augmentation_depends_on_epoch_and_index_only(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    for name in ("a", "b"):
        for i in range(3):
            (tmp_path / "d" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(noise).save(tmp_path / "d" / name / f"{i}.png")
    dataset = load_splits(tmp_path / "d", image_size=16, val_fraction=0, test_fraction=0)["train"]
    torch.manual_seed(123)
    first = dataset[(2, 5)][0]
    torch.manual_seed(999)
    assert torch.equal(first, dataset[(2, 5)][0])
    assert any(not torch.equal(first, dataset[(2, epoch)][0]) for epoch in range(6, 12))


def test_folder_split_dataset_matches_load_splits(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 8, "b": 8})
    splits = load_splits(root, image_size=16)
    for split in ("train", "val", "test"):
        dataset = ImageFolderSplit(root, split, image_size=16)
        assert dataset.samples == splits[split].samples and dataset.classes == ["a", "b"]
        image, label = dataset[0]
        assert image.shape == (3, 16, 16) and label in (0, 1)
    with pytest.raises(DataError, match="Unknown split"):
        ImageFolderSplit(root, "validation")


@pytest.mark.parametrize(("tag", "resize"), [("IMAGENET1K_V1", 256), ("IMAGENET1K_V2", 232)])
def test_eval_transform_follows_the_weights_meta(tag, resize):
    record = next(r for r in weights_records("resnet50") if r.tag == tag)
    config = eval_transform_config(weights=record)
    assert (config["resize_size"], config["crop_size"]) == (resize, 224)
    scaled = eval_transform_config(image_size=112, weights=record)
    assert (scaled["resize_size"], scaled["crop_size"]) == (resize // 2, 112)


def test_weights_can_be_named():
    assert eval_transform_config(weights="resnet50.IMAGENET1K_V1")["resize_size"] == 256
    assert eval_transform_config(weights="resnet50")["resize_size"] == 232  # default weights: V2


def test_eval_transform_matches_torchvision_preset(tmp_path):
    record = next(r for r in weights_records("resnet50") if r.tag == "IMAGENET1K_V2")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype=np.uint8))
    ours = eval_transform(record)(image)
    reference = record.enum_member.transforms()(image)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_default_transforms_follow_image_size():
    config = eval_transform_config(image_size=32)
    assert (config["resize_size"], config["crop_size"]) == (37, 32)
    image = Image.new("RGB", (50, 40), (9, 9, 9))
    assert train_transform(config)(image).shape == (3, 32, 32)
    assert eval_transform(config)(image).shape == (3, 32, 32)


def test_reusing_a_split_does_not_rewrite_its_manifest(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 4, "b": 4})
    load_splits(root, image_size=16)
    manifest = root / data.MANIFEST_NAME
    stamp = manifest.stat().st_mtime_ns
    manifest.chmod(0o444)
    load_splits(root, image_size=16)
    assert manifest.stat().st_mtime_ns == stamp
    write_image(root / "a" / "new.png")
    manifest.chmod(0o644)
    load_splits(root, image_size=16)
    assert "a/new.png" in json.loads(manifest.read_text())["checked"]


def test_unchanged_files_are_not_decoded_again(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "d", {"a": 4, "b": 4})
    load_splits(root, image_size=16)
    checked = []
    monkeypatch.setattr(data, "check_image", lambda path: checked.append(path) or None)
    load_splits(root, image_size=16)
    assert checked == []
    write_image(root / "a" / "001.png", size=(30, 30))  # same name, new content: checked again
    load_splits(root, image_size=16)
    assert [p.name for p in checked] == ["001.png"]


def test_find_image_files_is_recursive_sorted_and_skips_hidden_and_other_files(tmp_path):
    for relative in ("b/2.PNG", "a/1.jpg", "a/deep/3.webp", ".hidden/4.png", "a/.5.png", "__MACOSX/6.png",
                     "notes.txt", "a/7.jpeg"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")  # suffixes decide; nothing is decoded
    (tmp_path / "folder.png").mkdir()  # a folder named like an image is not a file
    found = [p.relative_to(tmp_path).as_posix() for p in data.find_image_files(tmp_path)]
    assert found == ["a/1.jpg", "a/7.jpeg", "a/deep/3.webp", "b/2.PNG"]
    assert data.find_image_files(tmp_path / "notes.txt") == [tmp_path / "notes.txt"]  # a file given is taken as it is
