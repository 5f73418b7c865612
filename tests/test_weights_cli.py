"""``python -m resnetzoo.weights``: list, download (cache and bundle), import, verify, convert.

Published files are stood in for by ``fake_published_weights`` (random-init torchvision checkpoints
whose SHA-256 prefix is put into the record's file name), and downloads come from a mirror served by
``http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from loopback import serve_files

import resnetzoo
from resnetzoo.weights import cli, files, records

# ------------------------------------------------------------------------------------------ helpers

@pytest.fixture
def mirror(monkeypatch):
    """A weights mirror on 127.0.0.1 serving ``served[file name] = bytes``, with downloads switched on."""
    served: dict[str, bytes] = {}
    with serve_files(served) as (base_url, _):
        monkeypatch.setenv(files.MIRROR_ENV, base_url)
        monkeypatch.delenv(files.OFFLINE_ENV, raising=False)
        yield served


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_bundle(folder: Path, *entries: tuple[records.WeightsRecord, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for record, payload in entries:
        (folder / record.filename).write_bytes(payload)
    cli.write_manifest(folder / cli.MANIFEST_NAME, {r.filename: sha256(p) for r, p in entries})
    return folder


# ------------------------------------------------------------------------------------------ selection and list


def test_a_spec_selects_default_tag_one_tag_or_all_tags():
    assert [r.tag for r in cli.select_records(["resnet50"])] == ["IMAGENET1K_V2"]
    assert [r.tag for r in cli.select_records(["resnet50:imagenet1k_v1"])] == ["IMAGENET1K_V1"]
    assert [r.tag for r in cli.select_records(["resnet50:all"])] == ["IMAGENET1K_V1", "IMAGENET1K_V2"]
    every = cli.select_records([], everything=True)
    expected = sum(len(torchvision.models.get_model_weights(name)) for name in resnetzoo.list_models())
    assert len(every) == expected and len({r.filename for r in every}) == expected


def test_list_shows_every_model_and_tag_with_published_metrics(capsys):
    status, out, _ = run(capsys, "list")
    assert status == 0
    for record in cli.all_records():
        row = next(line for line in out.splitlines() if line.split()[:2] == [record.model_name, record.tag])
        assert f"{record.acc1:.2f}" in row and f"{record.num_params / 1e6:.1f}M" in row and row.split()[-2:] == ["no", "-"]
    assert "80.86" in next(line for line in out.splitlines() if line.startswith("resnet50 ") and "V2" in line)


def test_list_reports_cached_verified_and_corrupt_files(capsys, fake_published_weights):
    good, _ = fake_published_weights("resnet18")
    bad, payload = fake_published_weights("resnet34")
    files.cached_path(bad).write_bytes(payload[:-10])  # truncated copy

    status, out, _ = run(capsys, "list", "resnet[13]*")
    rows = {tuple(line.split()[:2]): line.split() for line in out.splitlines()[2:] if line.strip() and line[0] != "*"}
    assert rows[("resnet18", good.tag)][-2:] == ["yes", "ok"]
    assert rows[("resnet34", bad.tag)][-2:] == ["yes", "CORRUPT"]
    assert status == 1


def test_list_pattern_that_matches_nothing_is_a_usage_error(capsys):
    status, _, err = run(capsys, "list", "vgg*")
    assert status == 2 and "No model matches 'vgg*'" in err


# ------------------------------------------------------------------------------------------ download


def test_download_fetches_into_the_cache_with_hash_check(capsys, fake_published_weights, mirror):
    record, payload = fake_published_weights("resnet18", cached=False)
    mirror[record.filename] = payload
    status, out, _ = run(capsys, "download", "resnet18", "--no-progress")
    assert status == 0 and record.full_name in out
    assert files.cached_path(record).read_bytes() == payload


def test_download_to_a_bundle_writes_a_manifest_sha256sum_accepts(capsys, fake_published_weights, mirror, tmp_path):
    record, payload = fake_published_weights("resnet18", cached=False)
    mirror[record.filename] = payload
    bundle = tmp_path / "bundle"

    status, out, _ = run(capsys, "download", "resnet18", "--to", str(bundle), "--no-progress")

    assert status == 0 and f"import {bundle}" in out
    assert (bundle / record.filename).read_bytes() == payload
    assert (bundle / cli.MANIFEST_NAME).read_text() == f"{sha256(payload)}  {record.filename}\n"
    assert not files.cached_path(record).exists()  # a bundle does not fill this machine's cache
    if shutil.which("sha256sum"):
        check = subprocess.run(["sha256sum", "-c", cli.MANIFEST_NAME], cwd=bundle, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_a_file_downloaded_into_a_bundle_is_hashed_once_while_downloading(capsys, fake_published_weights, mirror,
                                                                          tmp_path, monkeypatch):
    record, payload = fake_published_weights("resnet18", cached=False)
    mirror[record.filename] = payload
    bundle = tmp_path / "bundle"
    opened: list[Path] = []

    def recording_open(path, *args, **kwargs):
        opened.append(Path(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(files, "open", recording_open, raising=False)  # what sha256_file reads the file with
    assert run(capsys, "download", "resnet18", "--to", str(bundle), "--no-progress")[0] == 0
    assert (bundle / cli.MANIFEST_NAME).read_text() == f"{sha256(payload)}  {record.filename}\n"
    assert bundle / record.filename not in opened


def test_download_to_a_bundle_reuses_the_verified_cache_and_keeps_earlier_entries(capsys, fake_published_weights,
                                                                                 tmp_path, monkeypatch):
    first, first_payload = fake_published_weights("resnet18")
    second, second_payload = fake_published_weights("resnet34")
    bundle = tmp_path / "bundle"
    assert run(capsys, "download", "resnet18", "--to", str(bundle))[0] == 0  # offline: served from the cache
    assert run(capsys, "download", "resnet34", "--to", str(bundle))[0] == 0
    assert cli.read_manifest(bundle / cli.MANIFEST_NAME) == {
        first.filename: sha256(first_payload), second.filename: sha256(second_payload)}


def test_a_mirror_serving_wrong_bytes_saves_nothing(capsys, fake_published_weights, mirror, tmp_path):
    record, payload = fake_published_weights("resnet18", cached=False)
    mirror[record.filename] = payload[:-100]
    bundle = tmp_path / "bundle"
    status, _, err = run(capsys, "download", "resnet18", "--to", str(bundle), "--no-progress")
    assert status == 1 and "SHA-256 mismatch" in err
    assert sorted(p.name for p in bundle.iterdir()) == []


def test_a_failed_download_keeps_the_finished_part_of_the_bundle(capsys, fake_published_weights, mirror, tmp_path):
    first, payload = fake_published_weights("resnet18", cached=False)
    missing, _ = fake_published_weights("resnet34", cached=False)
    mirror[first.filename] = payload  # the mirror lacks the second file: HTTP 404
    bundle = tmp_path / "bundle"

    status, _, err = run(capsys, "download", "resnet18", "resnet34", "--to", str(bundle), "--no-progress")

    assert status == 1 and f"Downloading {missing.full_name}" in err and "404" in err
    assert cli.read_manifest(bundle / cli.MANIFEST_NAME) == {first.filename: sha256(payload)}
    assert sorted(p.name for p in bundle.iterdir()) == sorted([first.filename, cli.MANIFEST_NAME])


def test_download_while_offline_is_a_clear_error(capsys, fake_published_weights):
    fake_published_weights("resnet18", cached=False)
    status, _, err = run(capsys, "download", "resnet18")
    assert status == 1 and "RESNETZOO_OFFLINE" in err and "import" in err


def test_download_of_an_unknown_model_is_a_usage_error_that_suggests_names(capsys):
    status, _, err = run(capsys, "download", "resnet05")
    assert status == 2 and "Did you mean" in err and "python -m resnetzoo.weights list" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["download", "resnet50:V3"], ["convert", "resnet50:V3", "--out", "unused"]])
def test_an_unknown_tag_is_a_usage_error_in_command_line_words(capsys, argv):
    status, _, err = run(capsys, *argv)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "Available tags: IMAGENET1K_V1, IMAGENET1K_V2" in err and "resnet50:TAG" in err
    assert "pretrained" not in err  # the library's wording (pretrained=True) means nothing on the command line


def test_a_bundle_path_that_is_a_file_is_a_one_line_error(capsys, fake_published_weights, tmp_path):
    fake_published_weights("resnet18")
    not_a_folder = tmp_path / "bundle"
    not_a_folder.write_text("")
    status, _, err = run(capsys, "download", "resnet18", "--to", str(not_a_folder))
    assert status == 1 and err.startswith("error: ") and str(not_a_folder) in err


def test_download_without_names_is_a_usage_error(capsys):
    status, _, err = run(capsys, "download")
    assert status == 2 and "--all" in err


# ------------------------------------------------------------------------------------------ import


def test_imported_bundle_serves_create_offline_with_torchvision_logits(capsys, fake_published_weights, tmp_path):
    record, payload = fake_published_weights("resnet18", cached=False)
    bundle = make_bundle(tmp_path / "bundle", (record, payload))

    status, out, _ = run(capsys, "import", str(bundle))

    assert status == 0 and record.full_name in out
    assert files.cached_path(record).read_bytes() == payload
    model = resnetzoo.create("resnet18", pretrained=True).eval()  # RESNETZOO_OFFLINE=1: cache only
    reference = torchvision.models.resnet18()
    reference.load_state_dict(torch.load(files.cached_path(record), weights_only=True))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("contents", [[], ["notes.txt"]])
def test_import_of_a_folder_without_checkpoints_is_a_one_line_error(capsys, tmp_path, contents):
    folder = tmp_path / "bundle"
    folder.mkdir()
    for name in contents:
        (folder / name).write_text("x")
    status, out, err = run(capsys, "import", str(folder))
    assert status == 2 and out == ""
    assert err.strip().splitlines() == [
        f"error: Nothing to import in {folder}: expected *.pth files or a bundle folder with a SHA256SUMS manifest. "
        "Check the path."
    ]


def test_a_renamed_file_is_recognised_by_its_content(capsys, fake_published_weights, tmp_path):
    record, payload = fake_published_weights("resnet18", cached=False)
    renamed = tmp_path / "my-download.pth"
    renamed.write_bytes(payload)
    status, _, _ = run(capsys, "import", str(renamed))
    assert status == 0 and files.cached_path(record).read_bytes() == payload


def test_an_unknown_file_is_refused_and_nothing_is_copied(capsys, tmp_path, isolated_cache):
    stranger = tmp_path / "finetuned.pth"
    torch.save({"w": torch.zeros(2)}, stranger)
    status, _, err = run(capsys, "import", str(stranger))
    assert status == 1 and "matches no published" in err and str(stranger) in err
    assert not isolated_cache.exists() or list(isolated_cache.iterdir()) == []


def test_a_file_named_like_a_record_but_different_is_refused(capsys, fake_published_weights, tmp_path, isolated_cache):
    record, payload = fake_published_weights("resnet18", cached=False)
    impostor = tmp_path / record.filename
    impostor.write_bytes(payload[:500] + bytes([payload[500] ^ 0xFF]) + payload[501:])
    status, _, err = run(capsys, "import", str(impostor))
    assert status == 1 and "SHA-256 mismatch" in err and "resnet18.IMAGENET1K_V1" in err
    assert not files.cached_path(record).exists()


def test_a_bundle_file_damaged_in_transit_is_refused_by_the_manifest(capsys, fake_published_weights, tmp_path):
    good, good_payload = fake_published_weights("resnet18", cached=False)
    damaged, damaged_payload = fake_published_weights("resnet34", cached=False)
    bundle = make_bundle(tmp_path / "bundle", (good, good_payload), (damaged, damaged_payload))
    with open(bundle / damaged.filename, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\xff\xff")

    status, out, err = run(capsys, "import", str(bundle))

    assert status == 1 and "damaged in transit" in err and damaged.filename in err
    assert files.cached_path(good).is_file() and not files.cached_path(damaged).exists()


def test_a_file_listed_in_the_manifest_but_missing_is_reported(capsys, fake_published_weights, tmp_path):
    record, payload = fake_published_weights("resnet18", cached=False)
    bundle = make_bundle(tmp_path / "bundle", (record, payload))
    (bundle / record.filename).unlink()
    status, _, err = run(capsys, "import", str(bundle))
    assert status == 1 and "listed in the bundle's manifest" in err


def test_import_replaces_a_corrupt_cached_copy(capsys, fake_published_weights, tmp_path):
    record, payload = fake_published_weights("resnet18")
    files.cached_path(record).write_bytes(b"garbage")
    source = tmp_path / record.filename
    source.write_bytes(payload)
    status, out, _ = run(capsys, "import", str(source))
    assert status == 0 and "replaced a corrupt copy" in out
    assert files.cached_path(record).read_bytes() == payload


# ------------------------------------------------------------------------------------------ verify


def test_verify_reports_ok_corrupt_and_foreign_files(capsys, fake_published_weights, isolated_cache):
    good, _ = fake_published_weights("resnet18")
    bad, _ = fake_published_weights("resnet34")
    files.cached_path(bad).write_bytes(b"not the file")
    (isolated_cache / "someone-elses.pth").write_bytes(b"x")

    status, out, _ = run(capsys, "verify")

    assert status == 1
    assert f"ok       {good.full_name}" in out and f"CORRUPT  {bad.full_name}" in out and "skip     someone-elses.pth" in out
    assert files.cached_path(bad).exists()  # reported, not deleted, without --delete-corrupt


def test_verify_delete_corrupt_removes_only_corrupt_files(capsys, fake_published_weights):
    good, _ = fake_published_weights("resnet18")
    bad, _ = fake_published_weights("resnet34")
    files.cached_path(bad).write_bytes(b"not the file")
    status, out, _ = run(capsys, "verify", "--delete-corrupt")
    assert status == 0 and "DELETED" in out
    assert files.cached_path(good).exists() and not files.cached_path(bad).exists()


def test_verify_of_an_empty_cache_succeeds(capsys):
    status, out, _ = run(capsys, "verify")
    assert status == 0 and out.startswith("0 checkpoint(s) checked")  # no blank line first


@pytest.mark.parametrize("command", ["list", "verify"])
def test_help_documents_the_exit_status(capsys, command):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert "exit status:" in out and "1    a cached file is corrupt (list, verify)" in out


# ------------------------------------------------------------------------------------------ convert


def test_convert_writes_a_folder_with_torchvision_logits(capsys, fake_published_weights, tmp_path):
    record, payload = fake_published_weights("resnet18")
    out_folder = tmp_path / "converted"

    status, out, _ = run(capsys, "convert", "resnet18", "--out", str(out_folder))

    assert status == 0 and str(out_folder) in out
    model = resnetzoo.create(out_folder).eval()
    assert model.config.base_weights == record.full_name and model.config.base_weights_sha256 == sha256(payload)
    assert len(model.config.class_names) == 1000
    reference = torchvision.models.resnet18()
    reference.load_state_dict(torch.load(files.cached_path(record), weights_only=True))
    for key, value in reference.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x), atol=1e-5, rtol=0)


def test_convert_a_local_torchvision_checkpoint(capsys, tmp_path):
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(num_classes=10)
    checkpoint = tmp_path / "finetuned.pth"
    torch.save(reference.state_dict(), checkpoint)

    status, _, _ = run(capsys, "convert", "resnet18", "--weights", str(checkpoint), "--out", str(tmp_path / "out"))

    assert status == 0
    model = resnetzoo.create(tmp_path / "out")
    assert model.config.num_classes == 10
    for key, value in reference.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_convert_refuses_a_tag_and_a_file_together(capsys, tmp_path):
    status, _, err = run(capsys, "convert", "resnet18:IMAGENET1K_V1", "--weights", "x.pth", "--out", str(tmp_path))
    assert status == 2 and "not both" in err


def test_python_dash_m_runs_the_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "resnetzoo.weights", "list", "resnet18", "--no-verify"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "resnet18" in result.stdout and "IMAGENET1K_V1 *" in result.stdout


@pytest.mark.parametrize("doc", ["offline.md", "sharing.md"])
def test_every_weights_command_in_the_docs_parses(doc):
    text = (Path(__file__).resolve().parents[1] / "docs" / doc).read_text()
    commands = [line.split("python -m resnetzoo.weights", 1)[1].split("#")[0].split()
                for line in text.splitlines() if line.lstrip().startswith("python -m resnetzoo.weights")]
    assert len(commands) >= 2
    parser = cli.build_parser()
    for argv in commands:
        parser.parse_args([arg.strip("'") for arg in argv])  # SystemExit (a failure) on a stale option
