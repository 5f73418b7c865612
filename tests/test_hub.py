"""Saved folders and the Hugging Face Hub.

The Hub tests run huggingface_hub's real download and upload code against ``FakeHub``: an
``http.server`` on 127.0.0.1 that answers the few endpoints a model repository needs exactly as
the Hub does (headers included). No test touches the internet.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from safetensors import safe_open

import resnetzoo
from resnetzoo import hub
from resnetzoo.config import ConfigError
from resnetzoo.errors import ResnetzooError, WeightsFileError, WeightsUnavailableError

# ------------------------------------------------------------------------------------------ helpers

def tiny_model(num_classes: int = 3, seed: int = 0, **overrides) -> resnetzoo.ResNet:
    """A one-block-per-stage ResNet whose BatchNorm statistics are not the defaults (so buffers are really saved)."""
    torch.manual_seed(seed)
    model = resnetzoo.create("resnet18", num_layers=[1, 1, 1, 1], num_classes=num_classes, **overrides)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, model.config.in_chans, 32, 32))
    return model.eval()


def assert_same_model(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key
    x = torch.randn(2, a.config.in_chans, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def folder_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in (hub.CONFIG_NAME, hub.WEIGHTS_NAME, hub.CARD_NAME)}


# ------------------------------------------------------------------------------------------ folders


def test_save_then_create_from_folder_is_bit_exact(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "run")
    restored = resnetzoo.create(tmp_path / "run")
    # Loaded without a random init first: every tensor must still be real, trainable and in train mode.
    assert restored.training
    assert all(t.device.type == "cpu" for t in restored.state_dict().values())
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in restored.parameters())
    assert_same_model(model, restored)
    assert restored.config == model.config


@pytest.mark.parametrize("name", ["resnext50_32x4d", "wide_resnet50_2"])
def test_bottleneck_shapes_round_trip_bit_exact(tmp_path, name):
    torch.manual_seed(1)
    model = resnetzoo.create(name, num_layers=[1, 1, 1, 1], num_classes=5, in_chans=1)
    hub.save_pretrained(model, tmp_path)
    assert_same_model(model, resnetzoo.create(tmp_path))


def test_a_folder_with_mixed_dtypes_loads_as_float32_values(tmp_path):
    model = tiny_model()
    model.fc.half()  # e.g. a head quantised by hand: the rest stays float32
    model.save_pretrained(tmp_path)
    restored = resnetzoo.create(tmp_path)
    assert {p.dtype for p in restored.parameters()} == {torch.float32}
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value.to(restored.state_dict()[key].dtype)), key


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_comes_back_in_its_dtype(tmp_path, dtype):
    model = tiny_model().to(dtype)
    model.save_pretrained(tmp_path)
    restored = resnetzoo.create(tmp_path)
    assert next(restored.parameters()).dtype == dtype
    for key, value in model.state_dict().items():
        assert restored.state_dict()[key].dtype == value.dtype and torch.equal(restored.state_dict()[key], value), key


def test_registered_architecture_round_trips_with_its_name(tmp_path):
    model = resnetzoo.create("resnet18", num_classes=4)
    model.save_pretrained(tmp_path)
    restored = resnetzoo.create(str(tmp_path))
    assert restored.config.architecture == "resnet18"
    assert_same_model(model, restored)


def test_config_is_stored_in_json_and_in_safetensors_metadata(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    on_disk = json.loads((tmp_path / hub.CONFIG_NAME).read_text())
    with safe_open(tmp_path / hub.WEIGHTS_NAME, "pt") as handle:
        embedded = json.loads(handle.metadata()[hub.METADATA_KEY])
    assert on_disk == embedded
    assert on_disk["format"] == "resnetzoo/1"
    assert on_disk["num_layers"] == [1, 1, 1, 1]


def test_missing_config_json_falls_back_to_the_embedded_copy(tmp_path, caplog):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    (tmp_path / hub.CONFIG_NAME).unlink()
    with caplog.at_level("WARNING", logger="resnetzoo.hub"):
        restored = resnetzoo.create(tmp_path)
    assert_same_model(model, restored)
    assert "missing" in caplog.text


def test_model_card_describes_architecture_classes_metrics_and_base_weights(tmp_path):
    model = tiny_model(num_classes=3)
    model.config.class_names = ["cat", "dog", "heron"]
    model.config.base_weights = "resnet18.IMAGENET1K_V1"
    model.config.extra["recipe"] = {"epochs": 3, "lr": 0.01}
    hub.save_pretrained(model, tmp_path, metrics={"val_acc1": 91.25, "val_loss": 0.3})
    card = (tmp_path / hub.CARD_NAME).read_text()
    from huggingface_hub import ModelCard

    metadata = ModelCard(card).data  # the Hub's own parser reads the YAML header
    assert metadata.library_name == "resnetzoo" and metadata.pipeline_tag == "image-classification"
    assert {"resnetzoo", "image-classification"} <= set(metadata.tags)
    for text in ("cat, dog, heron", "| val_acc1 | 91.25 |", "resnet18.IMAGENET1K_V1", '"epochs": 3', "3 classes",
                 "resnetzoo.create("):
        assert text in card, text


def test_nested_metrics_of_a_training_run_become_one_table(tmp_path):
    model = tiny_model()
    model.config.extra["metrics"] = {"best_epoch": 3, "val": {"acc1": 0.91, "loss": 0.25}, "test": None}
    model.save_pretrained(tmp_path)
    card = (tmp_path / hub.CARD_NAME).read_text()
    assert "| best_epoch | 3 |" in card and "| val.acc1 | 0.91 |" in card and "| val.loss | 0.25 |" in card
    assert "test" not in card.split("## Metrics")[1].split("##")[0]


@pytest.mark.parametrize("wrap", ["compile", "data_parallel", "ema"])
def test_wrapped_models_are_saved_with_plain_names(tmp_path, wrap):
    model = tiny_model()
    wrapped = {
        "compile": lambda: torch.compile(model),  # only wraps; nothing is compiled until the first call
        "data_parallel": lambda: torch.nn.DataParallel(model),
        "ema": lambda: torch.optim.swa_utils.AveragedModel(model),
    }[wrap]()
    hub.save_pretrained(wrapped, tmp_path, config=model.config)
    restored = resnetzoo.create(tmp_path)
    if wrap == "ema":  # AveragedModel copies the model: compare with its copy
        model = wrapped.module
    assert_same_model(model, restored)


def test_metrics_are_saved_in_config_extra_without_touching_model_config(tmp_path):
    model = tiny_model()
    hub.save_pretrained(model, tmp_path, metrics={"val_acc1": 80.0})
    assert "metrics" not in model.config.extra
    assert resnetzoo.create(tmp_path).config.extra["metrics"] == {"val_acc1": 80.0}


def test_a_readme_written_by_a_person_is_not_overwritten(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    (tmp_path / hub.CARD_NAME).write_text("# My model\nHand-written notes.\n")
    model.save_pretrained(tmp_path)
    assert (tmp_path / hub.CARD_NAME).read_text() == "# My model\nHand-written notes.\n"


def test_a_generated_card_is_refreshed_on_the_next_save(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    hub.save_pretrained(model, tmp_path, metrics={"val_acc1": 12.5})
    assert "| val_acc1 | 12.5 |" in (tmp_path / hub.CARD_NAME).read_text()


def test_num_classes_override_replaces_only_the_head(tmp_path):
    model = tiny_model(num_classes=3)
    model.save_pretrained(tmp_path)
    restored = resnetzoo.create(tmp_path, num_classes=7)
    assert restored.fc.out_features == 7 and restored.config.num_classes == 7
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, restored.state_dict()[key]), key


def test_saving_a_model_whose_head_was_replaced_by_hand_is_refused(tmp_path):
    model = tiny_model(num_classes=3)
    model.fc = torch.nn.Linear(model.num_features, 9)
    with pytest.raises(ConfigError, match="does not match its config"):
        model.save_pretrained(tmp_path)
    assert not (tmp_path / hub.WEIGHTS_NAME).exists()


def test_the_config_mismatch_error_labels_each_shape_and_names_the_fixes(tmp_path):
    model = tiny_model(num_classes=3)
    width = model.num_features
    model.fc = torch.nn.Linear(width, 9)
    with pytest.raises(ConfigError) as info:
        model.save_pretrained(tmp_path)
    message = str(info.value)
    assert f"fc.weight: model (9, {width}) vs config (3, {width})" in message
    assert "fc.bias: model (9,) vs config (3,)" in message
    assert "model.reset_classifier(9)" in message and "model.config.num_classes = 9" in message
    model.config.num_classes = 9  # the fix the message names
    model.config.class_names = None
    assert model.save_pretrained(tmp_path) == tmp_path


def test_config_and_weights_from_different_models_give_a_clear_error(tmp_path):
    tiny_model(num_classes=3).save_pretrained(tmp_path / "a")
    tiny_model(num_classes=5).save_pretrained(tmp_path / "b")
    (tmp_path / "a" / hub.CONFIG_NAME).write_bytes((tmp_path / "b" / hub.CONFIG_NAME).read_bytes())
    with pytest.raises(WeightsFileError, match=r"does not match config.json.*fc.weight") as info:
        resnetzoo.create(tmp_path / "a")
    assert str(tmp_path / "a" / hub.WEIGHTS_NAME) in str(info.value)


def test_a_crash_while_saving_keeps_the_last_good_save(tmp_path, monkeypatch):
    first = tiny_model(seed=0)
    first.save_pretrained(tmp_path)
    before = folder_files(tmp_path)

    import resnetzoo._io as io_module

    def disk_full(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_module.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        tiny_model(seed=1).save_pretrained(tmp_path)
    monkeypatch.undo()

    assert folder_files(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)  # no temporary files left behind
    assert_same_model(first, resnetzoo.create(tmp_path))


@pytest.mark.gpu
def test_a_model_on_cuda_saves_a_folder_that_loads_on_cpu(tmp_path):
    model = tiny_model().to("cuda")
    model.save_pretrained(tmp_path)
    restored = resnetzoo.create(tmp_path)
    assert next(restored.parameters()).device.type == "cpu"
    for key, value in model.state_dict().items():
        assert torch.equal(value.cpu(), restored.state_dict()[key]), key


def test_a_save_interrupted_between_weights_and_config_is_detected_and_recoverable(tmp_path, monkeypatch, caplog):
    tiny_model(num_classes=3).save_pretrained(tmp_path)
    newer = tiny_model(num_classes=5, seed=1)

    real_atomic_write = hub.atomic_write

    def crash_on_config(path, mode="wb"):
        if Path(path).name == hub.CONFIG_NAME:
            raise KeyboardInterrupt  # the process dies after the weights were renamed into place
        return real_atomic_write(path, mode)

    monkeypatch.setattr(hub, "atomic_write", crash_on_config)
    with pytest.raises(KeyboardInterrupt):
        newer.save_pretrained(tmp_path)
    monkeypatch.undo()

    assert json.loads((tmp_path / hub.CONFIG_NAME).read_text())["num_classes"] == 3  # the old config is left
    with pytest.raises(WeightsFileError, match="if a save was interrupted, delete .*config.json"):
        resnetzoo.create(tmp_path)  # never a silent choice between the two
    (tmp_path / hub.CONFIG_NAME).unlink()  # the documented fix
    with caplog.at_level("WARNING", logger="resnetzoo.hub"):
        restored = resnetzoo.create(tmp_path)
    assert_same_model(newer, restored)
    assert "using the copy of the config stored in" in caplog.text


def test_saved_folder_that_is_not_a_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ResnetzooError, match="config.json"):
        resnetzoo.create(tmp_path)  # empty folder


def test_revision_is_refused_for_local_folders(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    with pytest.raises(TypeError, match="hf-hub"):
        hub.load_pretrained(tmp_path, revision="main")


# ------------------------------------------------------------------------------------------ fake Hub


class FakeHub:
    """The Hub's model-repository endpoints, in memory: resolve (HEAD/GET), create, validate-yaml, preupload, commit."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.gated: set[str] = set()
        self.write_token = "hf_fake_token_for_tests"
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # -- repository state
    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main", tag: str | None = None) -> str:
        repo = self.repos.setdefault(repo_id, {"commits": {}, "refs": {}})
        parent = repo["commits"].get(repo["refs"].get(branch), {})
        tree = {**parent, **files}
        sha = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in tree.items())).encode()
                           + str(len(repo["commits"])).encode()).hexdigest()
        repo["commits"][sha] = tree
        repo["refs"][branch] = sha
        if tag:
            repo["refs"][tag] = sha
        return sha

    def publish_folder(self, repo_id: str, folder: Path, **kwargs) -> str:
        return self.commit(repo_id, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}, **kwargs)

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_HEAD(self):
                self._resolve(send_body=False)

            def do_GET(self):
                self._resolve(send_body=True)

            def do_POST(self):
                fake.requests.append(("POST", self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Authorization") != f"Bearer {fake.write_token}":
                    return self._json(401, {"error": "Invalid credentials in Authorization header"})
                path = urlsplit(self.path).path
                if path == "/api/repos/create":
                    data = json.loads(body)
                    repo_id = f"{data['organization']}/{data['name']}"
                    if repo_id in fake.repos:
                        return self._json(409, {"error": "You already created this model repo"})
                    fake.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs\n"})
                    return self._json(200, {"url": f"{fake.endpoint}/{repo_id}"})
                if path == "/api/validate-yaml":
                    return self._json(200, {"errors": [], "warnings": []})
                parts = path.split("/")  # ['', 'api', 'models', org, name, 'preupload'|'commit', revision]
                if len(parts) == 7 and parts[:3] == ["", "api", "models"]:
                    repo_id = f"{parts[3]}/{parts[4]}"
                    if repo_id not in fake.repos:
                        return self._error(404, "RepoNotFound", repo_id)
                    if parts[5] == "preupload":
                        files = json.loads(body)["files"]
                        return self._json(200, {"files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                            for f in files]})
                    if parts[5] == "commit":
                        files = {}
                        for line in body.decode().splitlines():
                            item = json.loads(line)
                            if item["key"] == "file":
                                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        sha = fake.commit(repo_id, files, branch=unquote(parts[6]))
                        return self._json(200, {"commitUrl": f"{fake.endpoint}/{repo_id}/commit/{sha}",
                                                "commitOid": sha, "pullRequestUrl": None})
                self._json(404, {"error": "not implemented by FakeHub"})

            def _resolve(self, send_body: bool):
                fake.requests.append((self.command, self.path))
                parts = urlsplit(self.path).path.split("/")  # ['', org, name, 'resolve', revision, filename]
                if len(parts) != 6 or parts[3] != "resolve":
                    return self._error(404, "RepoNotFound", self.path)
                repo_id, revision, filename = f"{parts[1]}/{parts[2]}", unquote(parts[4]), unquote(parts[5])
                repo = fake.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", repo_id)
                if repo_id in fake.gated:
                    return self._error(403, "GatedRepo", repo_id)
                sha = revision if revision in repo["commits"] else repo["refs"].get(revision)
                if sha is None:
                    return self._error(404, "RevisionNotFound", revision)
                content = repo["commits"][sha].get(filename)
                if content is None:
                    return self._error(404, "EntryNotFound", filename, {"X-Repo-Commit": sha})
                self.send_response(200)
                self.send_header("X-Repo-Commit", sha)
                self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if send_body:
                    self.wfile.write(content)

            def _error(self, status, code, what, headers=None):
                body = json.dumps({"error": f"{code}: {what}"}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, status, payload):
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def set_hub_offline(monkeypatch, offline: bool) -> None:
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import: the constant is what its code consults.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    if offline:
        monkeypatch.setenv("RESNETZOO_OFFLINE", "1")
    else:
        monkeypatch.delenv("RESNETZOO_OFFLINE", raising=False)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    server = FakeHub()
    # Like HF_HUB_OFFLINE, these are read at import time; patch the module attributes the code reads.
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    # huggingface_hub also fetches {ENDPOINT}/api/agent-harnesses once a day and caches it under HF_HOME.
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf_home" / ".agent_harnesses.json"))
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    set_hub_offline(monkeypatch, False)
    yield server
    server.close()


def test_create_from_hub_downloads_through_huggingface_hub(fake_hub, tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "folder")
    fake_hub.publish_folder("org/tiny", tmp_path / "folder")

    restored = resnetzoo.create("hf-hub:org/tiny")

    assert_same_model(model, restored)
    fetched = {path.rsplit("/", 1)[-1] for method, path in fake_hub.requests if method == "GET" and "/resolve/" in path}
    assert fetched == {hub.CONFIG_NAME, hub.WEIGHTS_NAME}
    # The files sit in huggingface_hub's own cache layout, so its tools (hf cache ls/rm) manage them.
    assert list((tmp_path / "hf_cache").glob(f"models--org--tiny/snapshots/*/{hub.WEIGHTS_NAME}"))


def test_hub_revision_selects_the_tagged_commit(fake_hub, tmp_path):
    old, new = tiny_model(seed=0), tiny_model(seed=1)
    old.save_pretrained(tmp_path / "old")
    new.save_pretrained(tmp_path / "new")
    old_sha = fake_hub.publish_folder("org/tiny", tmp_path / "old", tag="v1")
    fake_hub.publish_folder("org/tiny", tmp_path / "new")

    assert_same_model(old, resnetzoo.create("hf-hub:org/tiny", revision="v1"))
    assert_same_model(old, resnetzoo.create("hf-hub:org/tiny", revision=old_sha))
    assert_same_model(old, resnetzoo.create("hf-hub:org/tiny@v1"))
    assert_same_model(new, resnetzoo.create("hf-hub:org/tiny"))


def test_weights_come_from_the_same_commit_as_the_config(fake_hub, tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "folder")
    sha = fake_hub.publish_folder("org/tiny", tmp_path / "folder")
    resnetzoo.create("hf-hub:org/tiny")
    weights_requests = [path for method, path in fake_hub.requests if path.endswith(hub.WEIGHTS_NAME)]
    assert weights_requests and all(f"/resolve/{sha}/" in path for path in weights_requests)


def test_offline_with_a_populated_cache_loads_without_any_request(fake_hub, tmp_path, monkeypatch):
    model = tiny_model()
    model.save_pretrained(tmp_path / "folder")
    fake_hub.publish_folder("org/tiny", tmp_path / "folder")
    resnetzoo.create("hf-hub:org/tiny")  # populates the cache
    fake_hub.requests.clear()

    set_hub_offline(monkeypatch, True)
    restored = resnetzoo.create("hf-hub:org/tiny")

    assert_same_model(model, restored)
    assert fake_hub.requests == []


def test_offline_with_an_empty_cache_gives_our_clear_error(fake_hub, monkeypatch):
    set_hub_offline(monkeypatch, True)
    with pytest.raises(WeightsUnavailableError) as info:
        resnetzoo.create("hf-hub:org/tiny")
    message = str(info.value)
    assert "hf-hub:org/tiny" in message and "offline" in message and "HF_HUB_CACHE" in message
    assert fake_hub.requests == []


def test_resnetzoo_offline_alone_keeps_hub_loads_off_the_network(fake_hub, monkeypatch):
    monkeypatch.setenv("RESNETZOO_OFFLINE", "yes")  # HF_HUB_OFFLINE stays off
    with pytest.raises(WeightsUnavailableError, match="offline mode is on"):
        resnetzoo.create("hf-hub:org/tiny")
    assert fake_hub.requests == []


def test_hf_hub_offline_set_after_import_is_honoured(fake_hub, monkeypatch):
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE is False  # huggingface_hub itself still thinks it is online
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="offline mode is on"):
        resnetzoo.create("hf-hub:org/tiny")
    assert fake_hub.requests == []


def test_unreachable_hub_with_an_empty_cache_gives_our_clear_error(fake_hub, monkeypatch):
    import time

    from huggingface_hub.utils import _http

    class NoWaitTime:  # huggingface_hub backs off 1+2+4+8+8 s between retries; the test need not wait
        sleep = staticmethod(lambda seconds: None)

        def __getattr__(self, name):
            return getattr(time, name)

    monkeypatch.setattr(_http, "time", NoWaitTime())
    fake_hub.close()
    with pytest.raises(WeightsUnavailableError, match="unreachable"):
        resnetzoo.create("hf-hub:org/tiny")


def test_unknown_hub_repository_is_a_clear_error(fake_hub):
    with pytest.raises(hub.HubError, match="repository not found"):
        resnetzoo.create("hf-hub:org/missing")


def test_unknown_hub_revision_is_a_clear_error(fake_hub, tmp_path):
    tiny_model().save_pretrained(tmp_path / "folder")
    fake_hub.publish_folder("org/tiny", tmp_path / "folder")
    with pytest.raises(hub.HubError, match="no such revision"):
        resnetzoo.create("hf-hub:org/tiny", revision="v9")


def test_an_invalid_hub_name_is_a_clear_error(fake_hub):
    with pytest.raises(hub.HubError, match="org/name"):
        resnetzoo.create("hf-hub:not a/valid//name")
    assert fake_hub.requests == []


def test_hub_repository_without_resnetzoo_files_is_a_clear_error(fake_hub):
    fake_hub.commit("org/other", {"pytorch_model.bin": b"not ours"})
    with pytest.raises(hub.HubError, match="not a resnetzoo model"):
        resnetzoo.create("hf-hub:org/other")


def test_gated_hub_repository_says_how_to_get_access(fake_hub, tmp_path):
    tiny_model().save_pretrained(tmp_path / "folder")
    fake_hub.publish_folder("org/gated", tmp_path / "folder")
    fake_hub.gated.add("org/gated")
    with pytest.raises(hub.HubError, match="is gated: accept its terms"):
        resnetzoo.create("hf-hub:org/gated")


def test_push_with_a_rejected_token_is_a_clear_error(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    with pytest.raises(hub.HubError, match="Pushing to org/pushed .* failed .*hf auth login"):
        tiny_model().push_to_hub("org/pushed")
    assert "org/pushed" not in fake_hub.repos


def test_push_to_hub_then_create_round_trips_bit_exact(fake_hub):
    model = tiny_model()
    model.config.class_names = ["a", "b", "c"]
    url = model.push_to_hub("org/pushed")
    assert url.startswith(f"{fake_hub.endpoint}/org/pushed/commit/")

    files = fake_hub.repos["org/pushed"]["commits"][fake_hub.repos["org/pushed"]["refs"]["main"]]
    assert {hub.CONFIG_NAME, hub.WEIGHTS_NAME, hub.CARD_NAME} <= set(files)
    assert 'resnetzoo.create("hf-hub:org/pushed")' in files[hub.CARD_NAME].decode()
    assert_same_model(model, resnetzoo.create("hf-hub:org/pushed"))


def test_push_a_training_run_folder_as_it_is(fake_hub, tmp_path):
    model = tiny_model()
    hub.save_pretrained(model, tmp_path / "run", metrics={"val_acc1": 55.0})
    (tmp_path / "run" / "metrics.csv").write_text("epoch,loss\n1,0.5\n")  # run artefacts stay local
    hub.push_to_hub(tmp_path / "run", "hf-hub:org/run")
    files = fake_hub.repos["org/run"]["commits"][fake_hub.repos["org/run"]["refs"]["main"]]
    assert "metrics.csv" not in files
    assert files[hub.WEIGHTS_NAME] == (tmp_path / "run" / hub.WEIGHTS_NAME).read_bytes()
    assert 'resnetzoo.create("hf-hub:org/run")' in files[hub.CARD_NAME].decode()  # card rewritten for the Hub
    assert "| val_acc1 | 55 |" in files[hub.CARD_NAME].decode()
    assert_same_model(model, resnetzoo.create("hf-hub:org/run"))


def test_push_keeps_a_readme_written_by_a_person(fake_hub, tmp_path):
    tiny_model().save_pretrained(tmp_path / "run")
    (tmp_path / "run" / hub.CARD_NAME).write_text("# Heron detector\nOur notes.\n")
    hub.push_to_hub(tmp_path / "run", "org/run")
    files = fake_hub.repos["org/run"]["commits"][fake_hub.repos["org/run"]["refs"]["main"]]
    assert files[hub.CARD_NAME] == b"# Heron detector\nOur notes.\n"


def test_push_refuses_a_folder_that_would_not_load(fake_hub, tmp_path):
    tiny_model(num_classes=3).save_pretrained(tmp_path / "a")
    tiny_model(num_classes=5).save_pretrained(tmp_path / "b")
    (tmp_path / "a" / hub.CONFIG_NAME).write_bytes((tmp_path / "b" / hub.CONFIG_NAME).read_bytes())
    with pytest.raises(WeightsFileError):
        hub.push_to_hub(tmp_path / "a", "org/broken")
    assert "org/broken" not in fake_hub.repos


def test_push_while_offline_is_refused_before_any_request(fake_hub, monkeypatch):
    set_hub_offline(monkeypatch, True)
    with pytest.raises(hub.HubError, match="offline"):
        tiny_model().push_to_hub("org/pushed")
    assert fake_hub.requests == []
