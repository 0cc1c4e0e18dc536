"""Tests of models.cortex_unet: shapes and the layer order of the paper's Fig. 2."""

import pytest
import torch
from torch import nn

from models.cortex_unet import (
    CortexUNet,
    CortexUNetSpec,
    ResidualBlock,
    SkipConv,
    cortex_probability,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_output_is_one_logit_map_of_the_input_size():
    net = CortexUNet(CortexUNetSpec(width=2))
    for shape in [(2, 1, 192, 192), (1, 1, 64, 48)]:
        assert net(torch.rand(shape)).shape == (shape[0], 1, *shape[2:])


def test_probability_is_the_sigmoid_and_keeps_the_mode():
    net = CortexUNet(CortexUNetSpec(width=2)).train()
    x = torch.rand(2, 1, 32, 32)
    prob = cortex_probability(net, x)
    assert net.training
    net.eval()
    assert torch.allclose(prob, torch.sigmoid(net(x)))
    assert 0.0 <= float(prob.min()) and float(prob.max()) <= 1.0


def test_input_not_divisible_by_16_is_refused():
    with pytest.raises(ValueError, match="multiples of 16"):
        CortexUNet(CortexUNetSpec(width=2))(torch.rand(1, 1, 40, 32))


def test_five_levels_of_residual_blocks_with_doubling_widths():
    net = CortexUNet(CortexUNetSpec(width=3))
    assert [type(b) for b in net.encoder] == [ResidualBlock] * 5
    assert [b.body[0].out_channels for b in net.encoder] == [3, 6, 12, 24, 48]
    assert [type(b) for b in net.decoder] == [ResidualBlock] * 4
    assert [type(s) for s in net.skips] == [SkipConv] * 4
    assert net.head.out_channels == 1


def test_batch_norm_after_each_convolution_and_before_relu():
    net = CortexUNet(CortexUNetSpec(width=2))
    for block in [*net.encoder, *net.decoder]:
        kinds = [type(m) for m in block.body]
        assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d]
    for skip in net.skips:
        assert [type(m) for m in skip] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


def test_residual_block_adds_its_shortcut():
    same = ResidualBlock(4, 4).eval()
    proj = ResidualBlock(2, 4).eval()
    assert isinstance(same.shortcut, nn.Identity)
    assert [type(m) for m in proj.shortcut] == [nn.Conv2d, nn.BatchNorm2d]
    nn.init.zeros_(same.body[4].weight)  # last BN scale 0: the body contributes nothing
    nn.init.zeros_(same.body[4].bias)
    x = torch.randn(1, 4, 8, 8)
    assert torch.allclose(same(x), torch.relu(x))


def test_skip_connections_are_convolved_before_concatenation():
    torch.manual_seed(0)
    net = CortexUNet(CortexUNetSpec(width=4)).eval()
    x = torch.rand(1, 1, 32, 32)
    seen = []
    for level, skip in enumerate(net.skips):
        skip.register_forward_hook(lambda mod, inp, out, level=level: seen.append(level))
    before = net(x)
    assert sorted(seen) == [0, 1, 2, 3]
    net.skips[0].register_forward_hook(lambda mod, inp, out: out + 1.0)
    assert not torch.allclose(before, net(x))
