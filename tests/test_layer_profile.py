"""benchmarks/layer_profile.py: per-layer-kind times that add up, and MACs that match the model's."""

from __future__ import annotations

import json

import pytest
from scripts import load_benchmark_script

import resnetzoo


@pytest.fixture(scope="module")
def layer_profile():
    yield from load_benchmark_script("layer_profile")


def test_profile_accounts_for_every_layer_and_the_model_macs(layer_profile, tmp_path, capsys, monkeypatch):
    # A tiny ceiling probe (the test checks the plumbing), in the throughput module layer_profile imported.
    monkeypatch.setitem(layer_profile.measure_ceiling.__globals__["CEILING_SHAPES"], "cpu", (64, 1, 8, 8))
    out = tmp_path / "profile.json"
    code = layer_profile.main(["--model", "resnet18", "--batch-size", "2", "--image-size", "32", "--threads", "1",
                               "--repeats", "2", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    ceiling = report["ceiling"]["gflops_per_s"]
    macs_per_pass = resnetzoo.profile.count_macs(resnetzoo.create("resnet18"), 32) * 2
    setups = list(report["totals_ms"])
    assert len(setups) == 3
    for setup in setups:
        rows = [r for r in report["rows"] if r["setup"] == setup]
        kinds = {r["kind"]: r for r in rows}
        # resnet18: 1 stem conv, 16 3x3 convs (3 of them stride 2), 3 projection shortcuts, 1 linear layer.
        assert kinds["conv 7x7 stride 2"]["calls"] == 1 and kinds["Linear"]["calls"] == 1
        assert kinds["conv 3x3 stride 1"]["calls"] + kinds["conv 3x3 stride 2"]["calls"] == 16
        assert kinds["conv 1x1 stride 2"]["calls"] == 3
        # Folding removes every BatchNorm from the optimized model; torchvision's set-ups keep all 20.
        assert kinds.get("BatchNorm2d", {}).get("calls", 0) == (0 if "BN folded" in setup else 20)
        # GFLOP/s x time, summed over the kinds, gives back the model's MACs: nothing counted twice or left out.
        counted = sum(r["gflops_per_s"] * 1e9 * r["ms"] / 1e3 / 2 for r in rows if r["gflops_per_s"] is not None)
        assert counted == pytest.approx(macs_per_pass, rel=1e-6)
        for row in rows:
            if row["gflops_per_s"] is not None:
                assert row["percent_of_ceiling"] == pytest.approx(100 * row["gflops_per_s"] / ceiling)
        assert rows[-1]["kind"] == "other" and rows[-1]["gflops_per_s"] is None
    printed = capsys.readouterr().out
    assert printed.startswith("# resnet18, batch 2, 32 px, fp32, cpu, 1 thread(s)")
    assert "| setup | layer kind | calls | ms | share | GFLOP/s | % of ceiling |" in printed


def test_bad_arguments_exit_2(layer_profile, capsys):
    with pytest.raises(SystemExit) as exit_info:
        layer_profile.main(["--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "--batch-size and --repeats must be >= 1" in capsys.readouterr().err
