"""The hand-built modules against torchvision's: same names, same parameter counts, same logits."""

from __future__ import annotations

import pytest
import torch
import torchvision

import resnetzoo
from resnetzoo import BasicBlock, Bottleneck, ResNet
from resnetzoo.parity import max_logit_difference
from resnetzoo.profile import count_macs, count_parameters
from resnetzoo.weights import default_record

ALL_MODELS = resnetzoo.list_models()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_count_equals_torchvision_weights_meta(name):
    with torch.device("meta"):  # the architecture without weights: counting needs no memory
        model = resnetzoo.create(name)
    assert count_parameters(model) == default_record(name).num_params


@pytest.mark.parametrize("name", ALL_MODELS)
def test_eval_logits_equal_torchvision_with_same_weights(name):
    # max_logit_difference loads torchvision's random init into our model (strict=True, no renaming).
    assert max_logit_difference(name, image_size=64, batch_size=2) <= 1e-5


@pytest.mark.parametrize("name", ALL_MODELS)
def test_macs_match_torchvision_ops_meta(name):
    with torch.device("meta"):
        model = resnetzoo.create(name)
    gmacs = count_macs(model, image_size=224) / 1e9
    assert gmacs == pytest.approx(default_record(name).gflops, rel=1e-3)


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d"])
def test_train_mode_outputs_gradients_and_running_stats_match_torchvision(name):
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, weights=None, num_classes=10).train()
    ours = resnetzoo.create(name, num_classes=10).train()
    ours.load_state_dict(reference.state_dict(), strict=True)
    images = torch.randn(4, 3, 64, 64)
    targets = torch.tensor([0, 3, 7, 9])

    loss_ref = torch.nn.functional.cross_entropy(reference(images), targets)
    loss_ours = torch.nn.functional.cross_entropy(ours(images), targets)
    loss_ref.backward()
    loss_ours.backward()

    assert torch.allclose(loss_ours, loss_ref, atol=1e-5)
    ref_params = dict(reference.named_parameters())
    for key, parameter in ours.named_parameters():
        assert torch.allclose(parameter.grad, ref_params[key].grad, atol=1e-5, rtol=1e-4), key
    ref_buffers = dict(reference.named_buffers())
    for key, buffer in ours.named_buffers():
        assert torch.allclose(buffer.float(), ref_buffers[key].float(), atol=1e-6), key


def test_seed_constructor_works_as_written():
    model = ResNet(in_channels=3, num_classes=150, block=BasicBlock, num_layers=[3, 4, 6, 3])
    reference = torchvision.models.resnet34(weights=None, num_classes=150)
    model.load_state_dict(reference.state_dict(), strict=True)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 150)


def test_state_dict_names_are_torchvision_names():
    ours = ResNet(block=Bottleneck, num_layers=[3, 4, 6, 3])
    reference = torchvision.models.resnet50(weights=None)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert "layer2.0.downsample.0.weight" in ours.state_dict()
    assert "layer2.0.downsample.1.running_mean" in ours.state_dict()


def test_forward_features_and_head_compose_to_forward():
    model = resnetzoo.create("resnet50", num_classes=7).eval()
    images = torch.randn(2, 3, 64, 64)
    features = model.forward_features(images)
    assert features.shape == (2, model.num_features, 2, 2)
    assert model.num_features == 2048
    pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape == (2, 2048)
    assert torch.allclose(pooled, features.mean(dim=(2, 3)), atol=1e-6)
    assert torch.equal(model.forward_head(features), model(images))


def test_reset_classifier_replaces_head_and_zero_removes_it():
    model = resnetzoo.create("resnet18").eval()
    backbone_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    model.reset_classifier(5)
    assert model.fc.out_features == 5 and model.num_classes == 5
    assert model.get_classifier() is model.fc
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    for key, value in backbone_before.items():
        assert torch.equal(model.state_dict()[key], value)
    assert model.config.num_classes == 5 and model.config.class_names is None  # the config follows the head
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 512)
    with pytest.raises(ValueError):
        model.reset_classifier(-1)


def test_zero_init_residual_zeroes_last_bn_of_each_block():
    model = resnetzoo.create("resnet50", zero_init_residual=True)
    assert all(torch.count_nonzero(block.bn3.weight) == 0 for stage in (model.layer1, model.layer4) for block in stage)
    basic = resnetzoo.create("resnet18", zero_init_residual=True)
    assert torch.count_nonzero(basic.layer1[0].bn2.weight) == 0
    default = resnetzoo.create("resnet18")
    assert torch.count_nonzero(default.layer1[0].bn2.weight) > 0


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d"])
def test_model_is_torchscript_scriptable_with_same_outputs(name):
    model = resnetzoo.create(name, num_classes=3).eval()
    scripted = torch.jit.script(model)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scripted(images), model(images), atol=1e-5)
        assert torch.allclose(scripted.forward_features(images), model.forward_features(images), atol=1e-5)


def test_bad_constructor_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="four stages"):
        ResNet(num_layers=[2, 2, 2])
    with pytest.raises(ValueError, match="BasicBlock supports only groups=1"):
        ResNet(block=BasicBlock, groups=32, width_per_group=4)


def test_a_model_with_a_reset_head_saves_and_reloads(tmp_path):
    model = resnetzoo.create("resnet18").eval()
    model.reset_classifier(4)
    reloaded = resnetzoo.create(model.save_pretrained(tmp_path / "saved")).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(images), model(images))


@pytest.mark.parametrize(("block", "last_bn"), [(BasicBlock(8, 8), "bn2"), (Bottleneck(32, 8), "bn3")])
def test_residual_add_reuses_the_branch_output_instead_of_allocating(block, last_bn):
    # As in torchvision: a new tensor per block for ``out + identity`` cost ~4% of resnet50's CPU time.
    seen = {}

    def record(_module, _inputs, output):  # returns None: a forward hook's return value replaces the output
        seen["ptr"] = output.data_ptr()

    getattr(block, last_bn).register_forward_hook(record)
    block.eval()
    images = torch.randn(2, block.conv1.in_channels, 8, 8)
    with torch.inference_mode():
        output = block(images)
    assert output.data_ptr() == seen["ptr"]
    with torch.inference_mode():
        # And the sum is still right: relu(branch + identity), the input itself left untouched.
        branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(images))))) if last_bn == "bn2" else \
            block.bn3(block.conv3(block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(images))))))))
        torch.testing.assert_close(output, torch.relu(branch + images), rtol=0, atol=0)


def test_counting_macs_leaves_a_training_model_untouched():
    model = resnetzoo.create("resnet18").train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert count_macs(model, image_size=32) == count_macs(model.eval(), image_size=32) > 0
    # Runs on meta stand-ins: BatchNorm statistics and counters of the real model do not move.
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())
