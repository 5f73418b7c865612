"""Names -> models: the registry table, wildcard listing, and errors that suggest close matches."""

from __future__ import annotations

import pytest
import torchvision

import resnetzoo
from resnetzoo.errors import ResnetzooError, UnknownModelError

TORCHVISION_RESNET_FAMILY = sorted(
    name for name in torchvision.models.list_models(module=torchvision.models)
    if name.startswith(("resnet", "resnext", "wide_resnet"))
)


def test_registry_holds_exactly_torchvisions_resnet_family():
    assert sorted(resnetzoo.list_models()) == TORCHVISION_RESNET_FAMILY
    assert len(TORCHVISION_RESNET_FAMILY) == 10


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("resnext*", ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d"]),
        ("wide_*", ["wide_resnet50_2", "wide_resnet101_2"]),
        ("*50*", ["resnet50", "resnext50_32x4d", "wide_resnet50_2"]),
        ("resnet1?", ["resnet18"]),
        ("RESNET18", ["resnet18"]),
        ("vit*", []),
    ],
)
def test_list_models_filters_with_shell_wildcards(pattern, expected):
    assert resnetzoo.list_models(pattern) == expected


def test_unknown_model_suggests_close_matches():
    with pytest.raises(UnknownModelError) as caught:
        resnetzoo.create("resnet05")
    message = str(caught.value)
    assert "Unknown model 'resnet05'" in message
    assert "resnet50" in message.split("Did you mean:")[1]
    assert "list_models()" in message
    # Callers may catch it as the library's base error or as the built-in KeyError.
    assert isinstance(caught.value, ResnetzooError) and isinstance(caught.value, KeyError)


def test_unknown_model_with_no_close_match_still_explains():
    with pytest.raises(UnknownModelError, match="Unknown model 'efficientnet_b0'. See resnetzoo.list_models"):
        resnetzoo.create("efficientnet_b0")


def test_names_are_case_insensitive():
    assert resnetzoo.create("ResNet18").config.architecture == "resnet18"


def test_unknown_create_option_is_a_clear_type_error():
    with pytest.raises(TypeError, match="unknown options \\['dropout'\\]"):
        resnetzoo.create("resnet18", dropout=0.5)


def test_architecture_overrides_are_applied():
    model = resnetzoo.create("resnet50", groups=32, width_per_group=4)
    reference = torchvision.models.resnext50_32x4d(weights=None)
    model.load_state_dict(reference.state_dict(), strict=True)
    assert model.config.architecture is None  # no longer the registered resnet50


def test_created_model_carries_its_config():
    model = resnetzoo.create("resnext101_32x8d", num_classes=12, in_chans=1)
    config = model.config
    assert (config.architecture, config.num_classes, config.in_chans) == ("resnext101_32x8d", 12, 1)
    assert (config.block, config.num_layers, config.groups, config.width_per_group) == ("Bottleneck", [3, 4, 23, 3], 32, 8)
    assert config.base_weights is None


def test_a_path_that_is_not_a_folder_gets_a_path_error(tmp_path):
    with pytest.raises(resnetzoo.ModelSourceError, match="No such folder: .*runs/nope.*save_pretrained"):
        resnetzoo.create(str(tmp_path / "runs" / "nope"))
    with pytest.raises(resnetzoo.ModelSourceError, match="No such folder: ./resnet50"):
        resnetzoo.create("./resnet50")  # not "Did you mean: resnet50"
    weights_file = tmp_path / "weights.pth"
    weights_file.write_bytes(b"not read")
    with pytest.raises(resnetzoo.ModelSourceError, match="is a file, not a saved folder.*pretrained="):
        resnetzoo.create(weights_file)


def test_library_warnings_reach_stderr_without_logging_configuration(tmp_path):
    import subprocess
    import sys

    folder = resnetzoo.create("resnet18", num_layers=[1, 1, 1, 1], num_classes=2).save_pretrained(tmp_path / "saved")
    (folder / "config.json").unlink()  # loads from the config embedded in the weights, with a warning
    script = f"import resnetzoo; resnetzoo.create({str(folder)!r})"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert "config.json is missing; using the copy of the config stored in" in result.stderr
