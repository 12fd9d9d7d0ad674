"""CCDN / FCDN / Baseline (Contract 3): shapes, gradients, parameter sets, options, activation maps."""

from __future__ import annotations

import math

import pytest
import torch

from ccdn.losses import cocs_loss, compute_loss
from ccdn.models import create_model, list_models
from ccdn.models.cam import face_activation_map, output_activation_maps

SMALL = {"stacks": 1, "channels": 32, "input_size": 64}
LANDMARKS = 5


def small_model(name: str, **options):
    torch.manual_seed(0)
    return create_model(name, LANDMARKS, **{**SMALL, **options})


def images(batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_variants_are_registered():
    assert {"ccdn", "fcdn", "baseline"} <= set(list_models())


@pytest.mark.parametrize("num_excitations", [1, 2, 3, 4])
@pytest.mark.parametrize("name", ["ccdn", "fcdn", "baseline"])
def test_forward_backward_shapes_and_finite_cocs(name, num_excitations):
    model = small_model(name, num_excitations=num_excitations)
    output = model(images())
    assert output["landmarks"].shape == (2, LANDMARKS, 2)
    assert output["features"].shape == (2, 32, 8, 8)  # 64 → stem 32 → tail 16 → 8
    if name == "baseline":
        assert output["cocs"] == {}
    else:
        assert set(output["cocs"]) == {"T", "T-1", "G"}
        for value in output["cocs"].values():
            assert value.dim() == 0 and torch.isfinite(value)
            assert 0 <= value.item() <= num_excitations - 1 + 1e-5  # L(Q) ∈ [0, P−1]
        if num_excitations == 1:
            assert all(v.item() == 0 for v in output["cocs"].values())  # no pair to decorrelate
    losses = compute_loss(output, torch.rand(2, LANDMARKS, 2))
    losses["total"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), "every parameter gets a gradient"
    assert grads["backbone.stem.0.weight"].abs().sum() > 0
    if name != "baseline":
        assert grads["ctms.T.first_order_gates.0.hidden_to_gate.weight"].abs().sum() > 0
        # the fusion block only serves L(Q^G), which is identically 0 when P = 1
        assert (grads["cff.k2.weight"].abs().sum() > 0) == (num_excitations > 1)


def parameter_names(model) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def test_baseline_has_no_ctm_or_cocs_parameters():
    names = parameter_names(small_model("baseline", num_excitations=4))
    assert not [n for n in names if n.startswith(("ctms.", "merges.", "cff."))]
    assert any(n.startswith("backbone.") for n in names) and "head.weight" in names


def test_fcdn_has_no_second_order_parameters():
    fcdn_names = parameter_names(small_model("fcdn", gcp_channels=16))
    assert any("first_order_gates" in n for n in fcdn_names)
    assert not [n for n in fcdn_names if "second_order" in n or "gcp" in n]
    ccdn_names = parameter_names(small_model("ccdn", gcp_channels=16))
    assert any("second_order_gates" in n for n in ccdn_names) and any("gcp_reduce" in n for n in ccdn_names)


def test_parameter_counts_grow_with_p_by_the_gate_mlps():
    counts = {p: sum(t.numel() for t in small_model("ccdn", num_excitations=p).parameters()) for p in (1, 2, 8)}
    channels, hidden = 32, 8
    per_gate = (channels * hidden + hidden) + (hidden * channels + channels)
    per_excitation = 2 * 2 * per_gate + 2 * channels  # two orders, at T−1 and T; CFF's BN per excitation
    assert counts[2] - counts[1] == per_excitation
    assert counts[8] - counts[1] == 7 * per_excitation


def test_head_is_gap_plus_linear_rows_x_then_y():
    model = small_model("ccdn").eval()
    output = model(images())
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 2 * LANDMARKS
    expected = model.head(output["features"].mean(dim=(2, 3))).view(2, LANDMARKS, 2)
    torch.testing.assert_close(output["landmarks"], expected)
    assert model.default_loss == "l2"
    # initial predictions sit near the crop centre
    assert (output["landmarks"] - 0.5).abs().max() < 0.25


def test_cocs_terms_match_explicit_excitation_maps():
    model = small_model("ccdn", num_excitations=3).eval()
    x = images()
    stored = {}
    for layer in ("T-1", "T"):
        model.ctms[layer].register_forward_hook(lambda mod, inp, out, layer=layer: stored.update({layer: (inp[0], out)}))
    output = model(x, with_cocs=True)  # eval mode (fixed BatchNorm) computes them only on request
    for layer in ("T-1", "T"):
        inputs, ctm_out = stored[layer]
        maps = ctm_out.excitation_maps(inputs)  # X̂ᵖ (B, P, D, H, W)
        pooled = maps.mean(dim=(3, 4)).transpose(0, 1)
        torch.testing.assert_close(output["cocs"][layer], cocs_loss(pooled))
    lower, upper = stored["T-1"], stored["T"]
    lower_maps, upper_maps = lower[1].excitation_maps(lower[0]), upper[1].excitation_maps(upper[0])
    fused = torch.stack([model.cff.fuse(lower_maps[:, p], upper_maps[:, p]) for p in range(3)], dim=1)
    normalised = model.cff.bn(fused.flatten(1, 2)).unflatten(1, fused.shape[1:3])  # one BN per excitation
    torch.testing.assert_close(output["cocs"]["G"], cocs_loss(normalised.mean(dim=(3, 4)).transpose(0, 1)))
    # sum merge (Eq. 4 outputs summed): the head's map is Σₚ X̂ᵖ_T
    torch.testing.assert_close(output["features"], upper[1].excitation_maps(upper[0]).sum(dim=1))


@pytest.mark.parametrize(
    "options",
    [
        {"merge": "concat"},
        {"merge": "mean"},
        {"head_source": "G"},
        {"cocs_mode": "per_sample"},
        {"cff_norm": "shared"},
        {"cff_norm": "pooled_before"},
        {"cff_norm": "none", "head_source": "G"},
        {"backbone_style": "newell", "input_size": 64},
        {"tail_stages": 3},
        {"covariance_divisor": "M-1", "isqrt_iterations": 3},
        {"output_activation": "sigmoid"},
        {"num_excitations": 8},
    ],
)
def test_options_build_and_run(options):
    model = small_model("ccdn", **options)
    output = model(images())
    assert output["landmarks"].shape == (2, LANDMARKS, 2)
    assert all(torch.isfinite(v) for v in output["cocs"].values())
    compute_loss(output, torch.rand(2, LANDMARKS, 2))["total"].backward()
    if options.get("output_activation") == "sigmoid":
        assert ((output["landmarks"] > 0) & (output["landmarks"] < 1)).all()
    if options.get("head_source") == "G":
        assert output["features"].shape[-1] == 16  # the fused map lives at layer T−1's resolution


def test_baseline_with_fused_head_has_cff_but_no_cocs():
    model = small_model("baseline", head_source="G")
    output = model(images())
    assert output["cocs"] == {} and output["features"].shape == (2, 32, 16, 16)
    assert any(n.startswith("cff.") for n in parameter_names(model))


def test_eval_mode_single_image_and_bf16_autocast():
    model = small_model("ccdn").eval()
    with torch.no_grad():
        assert model(images(1))["landmarks"].shape == (1, LANDMARKS, 2)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            output = model(images(2).contiguous(memory_format=torch.channels_last), with_cocs=True)
    assert torch.isfinite(output["landmarks"].float()).all()
    assert set(output["cocs"]) == {"T", "T-1", "G"}
    assert all(torch.isfinite(v.float()) for v in output["cocs"].values())


def test_cocs_terms_are_computed_only_when_a_loss_needs_them():
    model = small_model("ccdn")
    x = images()
    assert set(model.train()(x)["cocs"]) == {"T", "T-1", "G"}  # training: the objective needs them
    with torch.no_grad():
        evaluated = model.eval()(x)
        requested = model(x, with_cocs=True)
    assert evaluated["cocs"] == {}  # evaluation and inference skip them
    torch.testing.assert_close(evaluated["landmarks"], requested["landmarks"])  # predictions do not depend on it
    assert set(requested["cocs"]) == {"T", "T-1", "G"}


def test_bad_options_name_the_problem():
    with pytest.raises(TypeError, match="unknown model option"):
        small_model("ccdn", num_excitation=4)
    with pytest.raises(ValueError, match="num_excitations"):
        small_model("ccdn", num_excitations=9)
    with pytest.raises(ValueError, match="merge"):
        small_model("ccdn", merge="max")
    with pytest.raises(ValueError, match="input_size=60"):
        small_model("ccdn", input_size=60)
    with pytest.raises(ValueError, match="tail_stages"):
        small_model("ccdn", tail_stages=1)
    with pytest.raises(KeyError, match="registered models"):
        create_model("ccdn-v2", LANDMARKS)


def test_face_activation_map_is_the_mean_cam_of_all_x_and_y_outputs():
    model = small_model("ccdn").eval()
    x = images()
    face = face_activation_map(model, x, normalize_each=False)
    assert face.shape == (2, 8, 8)
    with torch.no_grad():
        output = model(x)
        maps = output_activation_maps(output["features"], model.head)  # (B, 2L, h, w)
        # CAM property: GAP of map k plus bias k is output k.
        torch.testing.assert_close(maps.mean(dim=(2, 3)) + model.head.bias, output["landmarks"].flatten(1))
        by_hand = torch.einsum("d,bdhw->bhw", model.head.weight.mean(dim=0), output["features"])
    torch.testing.assert_close(face, by_hand)
    normalised = face_activation_map(model, x, size=64)
    assert normalised.shape == (2, 64, 64)
    assert normalised.min() >= 0 and normalised.max() <= 1 + 1e-6


def test_face_activation_map_restores_training_mode_and_rejects_headless_models():
    model = small_model("baseline").train()
    face_activation_map(model, images())
    assert model.training
    with pytest.raises(TypeError, match="head"):
        face_activation_map(torch.nn.Conv2d(3, 3, 1), images())


def test_paper_size_defaults():
    model = create_model("ccdn", 68)
    config = model.config
    assert (config.stacks, config.channels, config.input_size, config.num_excitations) == (4, 256, 128, 4)
    assert config.isqrt_iterations == 5 and config.reduction == 4
    ctm = model.ctms["T"]
    assert ctm.first_order_gates[0].squeeze_to_hidden.out_channels == 64  # D/4
    assert len(model.backbone.hourglasses) == 4 and model.backbone.out_size == 64
    assert math.isclose(sum(p.numel() for p in model.parameters()) / 1e6, 32.2, abs_tol=0.1)
