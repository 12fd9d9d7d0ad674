"""Eq. 7's BatchNorm readings (``cff_norm``) and whether L(Q^G) stays a real constraint under them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ccdn.benchmarks.cff_norm import cocs_terms, make_gates_near_identical
from ccdn.models import create_model
from ccdn.models.cff import CFF_NORMS, CrossLayerFeatureFusion

SMALL = {"stacks": 1, "channels": 32, "input_size": 64, "num_excitations": 4}


def excitation_maps(batch: int = 3, excitations: int = 2, channels: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    lower = torch.randn(batch, excitations, channels, 8, 8, generator=generator)
    upper = torch.randn(batch, excitations, channels, 4, 4, generator=generator)
    return lower, upper


def test_per_excitation_norm_is_one_batchnorm_per_excitation():
    torch.manual_seed(0)
    cff = CrossLayerFeatureFusion(4, num_excitations=2, norm="per_excitation").train()
    lower, upper = excitation_maps()
    out = cff(lower, upper)
    for p in range(2):
        fused = cff.fuse(lower[:, p], upper[:, p])
        expected = nn.functional.batch_norm(fused, None, None, training=True, eps=cff.bn.eps)
        torch.testing.assert_close(out.maps[:, p], expected)  # affine starts at weight 1, bias 0
        # each excitation's batch mean is removed on its own: GAP averages to 0 over the batch
        torch.testing.assert_close(out.maps[:, p].mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooled, out.maps.mean(dim=(3, 4)).transpose(0, 1))


def test_shared_norm_takes_statistics_over_all_excitations():
    torch.manual_seed(0)
    cff = CrossLayerFeatureFusion(4, num_excitations=2, norm="shared").train()
    lower, upper = excitation_maps()
    out = cff(lower, upper)
    fused = torch.stack([cff.fuse(lower[:, p], upper[:, p]) for p in range(2)], dim=1)
    expected = nn.functional.batch_norm(fused.flatten(0, 1), None, None, training=True).unflatten(0, (3, 2))
    torch.testing.assert_close(out.maps, expected)
    assert out.maps[:, 0].mean(dim=(0, 2, 3)).abs().max() > 1e-3  # one excitation alone is not centred


def test_pooled_before_reads_the_map_before_batchnorm_and_none_has_no_batchnorm():
    lower, upper = excitation_maps()
    torch.manual_seed(0)
    before = CrossLayerFeatureFusion(4, num_excitations=2, norm="pooled_before").train()
    out = before(lower, upper)
    fused = torch.stack([before.fuse(lower[:, p], upper[:, p]) for p in range(2)], dim=1)
    torch.testing.assert_close(out.pooled, fused.mean(dim=(3, 4)).transpose(0, 1))
    assert not torch.allclose(out.maps, fused)  # the forward path is still normalised
    plain = CrossLayerFeatureFusion(4, num_excitations=2, norm="none")
    assert plain.bn is None and plain.k2.bias is not None
    torch.testing.assert_close(plain(lower, upper).maps[:, 1], plain.fuse(lower[:, 1], upper[:, 1]))


def test_default_reading_is_one_batchnorm_per_excitation():
    model = create_model("ccdn", 5, **SMALL)
    assert model.config.cff_norm == "per_excitation"
    assert model.cff.bn.num_features == SMALL["channels"] * SMALL["num_excitations"]


def probe_images() -> torch.Tensor:
    return torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_near_identical_gates_keep_l_qg_high_under_the_default():
    """Near-copies of one excitation are not distinct semantics: L(Q^G) must say so (≈ P − 1)."""
    torch.manual_seed(0)
    model = create_model("ccdn", 5, **SMALL)
    make_gates_near_identical(model, noise=0.1)
    terms = cocs_terms(model, probe_images())
    assert terms["T"] > 2.7 and terms["G"] > 2.7  # P − 1 = 3 is the value for identical excitations


def test_shared_batchnorm_satisfies_l_qg_by_itself_at_init():
    """The reason for the default: one BN over all maps makes L(Q^G) small before any training."""
    values = {}
    for norm in ("shared", "per_excitation"):
        torch.manual_seed(0)
        values[norm] = cocs_terms(create_model("ccdn", 5, **SMALL, cff_norm=norm), probe_images())
    assert values["shared"]["T"] == pytest.approx(values["per_excitation"]["T"])  # same network up to CFF
    assert values["shared"]["G"] < 1.0 < 2.5 < values["per_excitation"]["G"]


def test_cocs_terms_leave_running_statistics_alone():
    torch.manual_seed(0)
    model = create_model("ccdn", 5, **SMALL)
    before = model.cff.bn.running_mean.clone()
    cocs_terms(model, probe_images())
    torch.testing.assert_close(model.cff.bn.running_mean, before)
    assert model.cff.bn.momentum == 0.1


def test_unknown_norm_names_the_choices():
    with pytest.raises(ValueError, match="cff_norm"):
        create_model("ccdn", 5, **SMALL, cff_norm="group")
    with pytest.raises(ValueError, match="per_excitation"):
        CrossLayerFeatureFusion(4, norm="group")
    assert set(CFF_NORMS) == {"per_excitation", "shared", "pooled_before", "none"}
