"""The U-Net and its presets: shapes, padding of odd sizes, paper architectures, option errors, BN fusion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from losslab.nets import PRESETS, UNet, available_presets, build_network, fuse_batch_norm, network_spec


@pytest.mark.parametrize("shape", [(16, 16, 16), (17, 9, 30), (5, 5, 5)])
def test_any_size_is_padded_and_cropped_back(shape):
    net = UNet(in_channels=2, out_channels=3, features=(4, 8, 16), norm="instance")
    out = net(torch.randn(1, 2, *shape))
    assert out.shape == (1, 3, *shape)


def test_2d_network():
    net = build_network({"preset": "unet2d", "features": [4, 8, 16]})
    assert net(torch.randn(2, 1, 23, 30)).shape == (2, 2, 23, 30)


def test_ice_presets_follow_the_paper():
    seg = build_network({"preset": "ice_segmentation"})
    edit = build_network({"preset": "ice_editing"})
    assert seg.features == (16, 32, 64, 128) and seg.in_channels == 1
    assert edit.features == (8, 16, 32, 64) and edit.in_channels == 3  # half the filters, (x, y_init, u)
    kinds = {type(m) for m in edit.modules()}
    assert nn.BatchNorm3d in kinds and nn.ReLU in kinds and nn.MaxPool3d in kinds
    convs = [m for m in edit.encoders[0].modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == 2 and all(c.kernel_size == (3, 3, 3) for c in convs)


def test_fetal_preset_has_five_levels_leaky_relu_instance_norm():
    net = build_network({"preset": "fetal_parcellation"})
    assert len(net.features) == 5 and net.out_channels == 9
    kinds = {type(m) for m in net.modules()}
    assert nn.InstanceNorm3d in kinds and nn.LeakyReLU in kinds and nn.BatchNorm3d not in kinds


def test_presets_listed_and_overridable():
    assert set(available_presets()) == set(PRESETS)
    spec = network_spec({"preset": "ice_editing", "out_channels": 4})
    assert spec["out_channels"] == 4 and spec["in_channels"] == 3


@pytest.mark.parametrize(
    "config, words",
    [
        ({"preset": "nope"}, ["nope", "ice_editing"]),
        ({"name": "vnet"}, ["vnet"]),
        ({"preset": "ice_editing", "filters": [1]}, ["filters"]),
        ({"norm": "layer"}, ["norm", "layer"]),
        ({"features": [8]}, ["features"]),
        ({"act": "gelu"}, ["act", "gelu"]),
    ],
)
def test_bad_options_are_named(config, words):
    with pytest.raises(ValueError) as info:
        build_network(config)
    for word in words:
        assert word in str(info.value)


def test_wrong_input_channels_is_explained():
    net = UNet(in_channels=3, features=(4, 8))
    with pytest.raises(ValueError, match=r"\(B, 3"):
        net(torch.randn(1, 1, 8, 8, 8))


def test_batch_norm_fusion_keeps_the_output():
    torch.manual_seed(0)
    net = build_network({"preset": "ice_editing", "features": [4, 8, 16]})
    net.train()
    for _ in range(3):  # give the running statistics non-trivial values
        net(torch.randn(2, 3, 16, 16, 16))
    net.eval()
    x = torch.randn(1, 3, 20, 16, 12)
    with torch.no_grad():
        ref = net(x)
        fuse_batch_norm(net)
        out = net(x)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in net.modules())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="eval"):
        fuse_batch_norm(build_network({"preset": "ice_editing"}))
