"""optimize_for_inference: same logits as the original (and as torchvision), on a copy, with every BatchNorm folded."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import resnetzoo
from resnetzoo.optimize import LOGIT_TOLERANCE, OptimizationError, fold_batchnorm, logit_error, optimize_for_inference


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters.

    A fresh BatchNorm (mean 0, var 1, weight 1, bias 0) is almost an identity, so folding it wrongly
    (say, dropping the shift) would still pass a parity test. These values make every term count.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(size, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_((torch.rand(size, generator=generator) - 0.5) * 0.4)
    return model


def pair(name: str) -> tuple[nn.Module, nn.Module]:
    """(torchvision model, resnetzoo model) holding the same weights, both in eval mode."""
    torch.manual_seed(0)
    reference = randomize_batchnorm(torchvision.models.get_model(name, weights=None)).eval()
    ours = resnetzoo.create(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def images(batch_size: int = 2, image_size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_fp32_optimized_logits_match_torchvision_within_tolerance(name):
    reference, ours = pair(name)
    optimized = optimize_for_inference(ours)
    x = images()
    with torch.inference_mode():
        expected = reference(x)
        error = logit_error(optimized(x), expected)
    assert error <= LOGIT_TOLERANCE[torch.float32] == 1e-4, f"{name}: logit error {error:.2e}"


def tiny_bottleneck_resnet() -> nn.Module:
    """Bottleneck blocks and projection shortcuts like resnet50's, at a fraction of the cost."""
    torch.manual_seed(0)
    return randomize_batchnorm(resnetzoo.ResNet(block=resnetzoo.Bottleneck, num_layers=[1, 1, 1, 1], num_classes=10))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["resnet18", "bottleneck"])
def test_half_precision_logits_match_fp32_within_dtype_tolerance(name, dtype):
    ours = (tiny_bottleneck_resnet() if name == "bottleneck" else pair(name)[1]).eval()
    optimized = optimize_for_inference(ours, dtype=dtype)
    x = images(batch_size=4)
    with torch.inference_mode():
        expected = ours(x)
        output = optimized(x)  # fp32 NCHW in: the pre-hook casts it
    assert output.dtype == dtype
    error = logit_error(output, expected)
    assert error <= LOGIT_TOLERANCE[dtype], f"{name} {dtype}: logit error {error:.2e}"
    # The reduced precision must really be used: an fp32 run would be an order of magnitude closer.
    assert error > 1e-5
    assert torch.equal(output.float().argmax(1), expected.argmax(1))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_every_batchnorm_is_folded_including_projection_shortcuts(name):
    _, ours = pair(name)
    optimized = optimize_for_inference(ours)
    expected_folds = sum(isinstance(m, nn.BatchNorm2d) for m in ours.modules())
    assert optimized.inference_optimizations["fold_bn"] == expected_folds
    assert not any(isinstance(m, nn.BatchNorm2d) for m in optimized.modules())
    assert isinstance(optimized.layer2[0].downsample[1], nn.Identity)
    assert optimized.layer2[0].downsample[0].bias is not None
    assert isinstance(optimized.bn1, nn.Identity) and optimized.conv1.bias is not None


def test_original_model_is_untouched():
    _, ours = pair("resnet18")
    ours.train()
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    optimize_for_inference(ours, dtype=torch.bfloat16)
    assert ours.training
    assert isinstance(ours.layer2[0].downsample[1], nn.BatchNorm2d)
    after = ours.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key
    assert ours.conv1.weight.is_contiguous()
    assert not ours._forward_pre_hooks


def test_channels_last_weights_and_nchw_input_is_accepted():
    _, ours = pair("resnet18")
    optimized = optimize_for_inference(ours)
    assert optimized.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not optimized.layer1[0].conv1.weight.is_contiguous()
    assert not optimized.training
    assert all(not p.requires_grad for p in optimized.parameters())


def test_options_switched_off_keep_batchnorm_and_layout():
    _, ours = pair("resnet18")
    optimized = optimize_for_inference(ours, channels_last=False, fold_bn=False)
    assert isinstance(optimized.bn1, nn.BatchNorm2d)
    assert optimized.conv1.weight.is_contiguous()
    x = images()
    with torch.inference_mode():
        assert logit_error(optimized(x), ours(x)) == 0.0


def test_batchnorm_not_fed_by_a_conv_is_left_alone():
    class ConvReluBn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn_after_relu = nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 4, 1)
            self.bn_shared_input = nn.BatchNorm2d(4)

        def forward(self, x):
            x = self.bn_after_relu(torch.relu(self.conv(x)))
            y = self.conv2(x)
            # conv2's output is read twice, so folding the BN into conv2 would change the sum.
            return self.bn_shared_input(y) + y

    model = randomize_batchnorm(ConvReluBn()).eval()
    optimized = optimize_for_inference(model)
    assert optimized.inference_optimizations["fold_bn"] == 0
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        assert logit_error(optimized(x), model(x)) <= 1e-6


def test_folding_a_model_in_train_mode_is_refused():
    model = resnetzoo.ResNet(num_layers=[1, 1, 1, 1], num_classes=3)
    with pytest.raises(OptimizationError, match="eval mode"):
        fold_batchnorm(model)


def test_untraceable_model_error_says_how_to_skip_folding():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            if x.sum() > 0:  # control flow on values: torch.fx cannot trace it
                return self.bn(self.conv(x))
            return x

    with pytest.raises(OptimizationError, match="fold_bn=False"):
        optimize_for_inference(DataDependent())
    assert optimize_for_inference(DataDependent(), fold_bn=False) is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [({"dtype": torch.int8}, "dtype must be"), ({"compile": 3}, "compile must be"),
     ({"compile": "turbo"}, "Unknown torch.compile mode .turbo.; use one of default, ")],
)
def test_bad_options_raise_a_clear_error(options, message):
    with pytest.raises(OptimizationError, match=message):
        optimize_for_inference(resnetzoo.ResNet(num_layers=[1, 1, 1, 1], num_classes=3), **options)


def test_not_a_module_is_refused():
    with pytest.raises(OptimizationError, match="torch.nn.Module"):
        optimize_for_inference({"conv1.weight": torch.zeros(1)})


def test_saving_an_optimized_model_is_refused_with_the_fix(tmp_path):
    from resnetzoo.hub import save_pretrained

    optimized = optimize_for_inference(resnetzoo.create("resnet18", num_classes=3))
    with pytest.raises(resnetzoo.ResnetzooError, match="Save the original model"):
        optimized.save_pretrained(tmp_path / "folder")
    with pytest.raises(resnetzoo.ResnetzooError, match="Save the original model"):
        save_pretrained(optimized, tmp_path / "folder")  # the function as well as the method
    assert not (tmp_path / "folder").exists()


def test_optimized_model_keeps_the_resnet_api():
    model = resnetzoo.create("resnet18", num_classes=5).eval()
    optimized = optimize_for_inference(model)
    assert optimized.config.num_classes == 5
    x = images()
    with torch.inference_mode():
        pooled = optimized.forward_head(optimized.forward_features(x), pre_logits=True)
    assert pooled.shape == (2, optimized.num_features)


def test_compile_is_passed_to_torch_compile_with_the_mode_and_runs_with_freezing(monkeypatch):
    import torch._inductor.config as inductor_config

    calls, freezing_seen = [], []

    def fake_compile(module, mode=None):
        calls.append(mode)

        class Compiled(torch.nn.Module):  # stands in for torch.compile's wrapper
            def __init__(self):
                super().__init__()
                self._orig_mod = module

            def forward(self, x):
                freezing_seen.append(inductor_config.freezing)
                return self._orig_mod(x)

        return Compiled()

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = resnetzoo.ResNet(num_layers=[1, 1, 1, 1], num_classes=3)
    autotuned = optimize_for_inference(model, compile="max-autotune")
    optimize_for_inference(model, compile=True)
    optimize_for_inference(model, compile=None)
    assert calls == ["max-autotune", None]
    # Dynamo reads the global flag while tracing, so it must be on during the call, and off again after it.
    before = inductor_config.freezing
    with torch.inference_mode():
        autotuned(images(image_size=32))
    assert freezing_seen == [True] and inductor_config.freezing == before
    # The ResNet's API still answers through the wrapper.
    assert autotuned.num_classes == 3 and autotuned._orig_mod.inference_optimizations["compile"] == "max-autotune"


@pytest.mark.slow
def test_compiled_tiny_model_matches_eager():
    # Inductor compiles C++ kernels on first use: ~45 s on 2 cores with a cold cache, a few seconds warm.
    model = randomize_batchnorm(resnetzoo.ResNet(num_layers=[1, 1, 1, 1], num_classes=3)).eval()
    optimized = optimize_for_inference(model, compile="default")
    x = images(image_size=32)
    with torch.inference_mode():
        error = logit_error(optimized(x), model(x))
    assert error <= LOGIT_TOLERANCE[torch.float32]
    assert optimized._orig_mod.inference_optimizations["compile"] == "default"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [None, torch.bfloat16, torch.float16])
def test_cuda_optimized_logits_match_fp32_eager(dtype):
    _, ours = pair("resnet50")
    ours = ours.cuda()
    optimized = optimize_for_inference(ours, dtype=dtype)
    x = images(batch_size=8, image_size=112).cuda()
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 would make the fp32 reference itself ~1e-3 off
    try:
        with torch.inference_mode():
            expected = ours(x)
            error = logit_error(optimized(x), expected)
    finally:
        torch.backends.cudnn.allow_tf32 = previous
    assert error <= LOGIT_TOLERANCE[dtype or torch.float32], f"{dtype}: logit error {error:.2e}"


def test_every_module_of_the_optimized_copy_is_in_eval_mode():
    model = resnetzoo.ResNet(num_layers=[1, 1, 1, 1], num_classes=3)  # a new model is in training mode
    for optimized in (optimize_for_inference(model), optimize_for_inference(model, compile=True)):
        # The Identity modules that replace folded BatchNorms (and the compile wrapper) are new modules too.
        assert [name for name, module in optimized.named_modules() if module.training] == []
