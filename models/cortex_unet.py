"""Residual 2D U-Net of the renal-cortex paper (``../shared/seeds/002_…``, Fig. 2).

"A U-Net architecture with 5 levels of depth, residual blocks, and rectified linear units
(ReLU) activation functions, and added convolutions on the skip connections"; "batch
normalization is after convolution and before activation". The paper gives no widths or
kernel sizes (its meta-parameters came from a Bayesian search); ours are:

* level ``l`` (0..4) has ``width * 2**l`` channels; levels 0-3 end in a 2x2 max-pool,
  level 4 is the bottleneck, so the input sides must be multiples of 16;
* residual block: ``conv3x3 -> BN -> ReLU -> conv3x3 -> BN``, plus the shortcut (identity,
  or ``conv1x1 -> BN`` when the channel count changes), then ReLU;
* skip connection: ``conv3x3 -> BN -> ReLU`` on the encoder features before they are
  concatenated with the upsampled decoder features (the paper's "simple convolutional
  layers", its blue boxes);
* decoder: 2x2 transposed convolution (stride 2) to the level's width, concatenation,
  residual block;
* head: ``conv1x1`` to one channel. :meth:`CortexUNet.forward` returns the logits;
  :func:`cortex_probability` applies the sigmoid.

The paper pre-trained on COCO persons; no such weights exist here, training starts from
PyTorch's default initialisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = [
    "ARCHITECTURE_NAME",
    "ARCHITECTURE_VERSION",
    "CortexUNet",
    "CortexUNetSpec",
    "ResidualBlock",
    "SkipConv",
    "cortex_probability",
]

ARCHITECTURE_NAME = "cortex-residual-unet-2d"
ARCHITECTURE_VERSION = "1"


@dataclass(frozen=True)
class CortexUNetSpec:
    """Hyper-parameters that fix the network's shape (stored in the model manifest)."""

    width: int = 16
    levels: int = 5
    in_channels: int = 1

    def __post_init__(self) -> None:
        if self.width < 1 or self.levels < 2 or self.in_channels < 1:
            raise ValueError(f"invalid CortexUNetSpec {self!r}: width >= 1, levels >= 2, "
                             "in_channels >= 1 expected")

    @property
    def divisor(self) -> int:
        """Input sides must be multiples of this (one halving per level below the top)."""
        return 2 ** (self.levels - 1)

    def as_dict(self) -> dict[str, int | str]:
        """Name, version and parameters, as written to the manifest."""
        return {"name": ARCHITECTURE_NAME, "version": ARCHITECTURE_VERSION, **asdict(self)}


def _conv_bn(in_ch: int, out_ch: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_ch)]


class ResidualBlock(nn.Module):
    """``relu(conv-BN-ReLU-conv-BN(x) + shortcut(x))``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(in_ch, out_ch, 3), nn.ReLU(inplace=True),
                                  *_conv_bn(out_ch, out_ch, 3))
        self.shortcut: nn.Module = (nn.Identity() if in_ch == out_ch
                                    else nn.Sequential(*_conv_bn(in_ch, out_ch, 1)))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class SkipConv(nn.Sequential):
    """``conv3x3 -> BN -> ReLU`` on a skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__(*_conv_bn(channels, channels, 3), nn.ReLU(inplace=True))


class CortexUNet(nn.Module):
    """The 5-level residual U-Net; ``(N, 1, H, W)`` slices in, ``(N, 1, H, W)`` logits out.

    Parameters
    ----------
    spec : CortexUNetSpec, optional
        Width, depth and input channels; the default is 16 channels at the top level.
    """

    def __init__(self, spec: CortexUNetSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or CortexUNetSpec()
        widths = [self.spec.width * 2**level for level in range(self.spec.levels)]
        self.encoder = nn.ModuleList()
        previous = self.spec.in_channels
        for w in widths:
            self.encoder.append(ResidualBlock(previous, w))
            previous = w
        self.pool = nn.MaxPool2d(2)
        self.skips = nn.ModuleList(SkipConv(w) for w in widths[:-1])
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in range(len(widths) - 1))
        self.decoder = nn.ModuleList(ResidualBlock(2 * w, w) for w in widths[:-1])
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the cortex probability, same height and width as ``x``."""
        if x.ndim != 4 or x.shape[1] != self.spec.in_channels:
            raise ValueError(f"expected (N, {self.spec.in_channels}, H, W) input, "
                             f"got shape {tuple(x.shape)}")
        d = self.spec.divisor
        if x.shape[2] % d or x.shape[3] % d:
            raise ValueError(f"input height and width must be multiples of {d}, "
                             f"got {tuple(x.shape[2:])}")
        features = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            features.append(x)
        x = features.pop()
        for level in reversed(range(len(self.decoder))):
            skip = self.skips[level](features[level])
            x = self.decoder[level](torch.cat([self.up[level](x), skip], dim=1))
        return self.head(x)


def cortex_probability(model: nn.Module, slices: torch.Tensor) -> torch.Tensor:
    """Sigmoid of ``model(slices)``, computed in eval and inference mode (no autograd).

    Parameters
    ----------
    model : torch.nn.Module
        A :class:`CortexUNet` (or any module returning logits).
    slices : torch.Tensor
        ``(N, 1, H, W)`` normalised slices.

    Returns
    -------
    torch.Tensor
        ``(N, 1, H, W)`` probabilities in [0, 1]. The model's training mode is restored.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return torch.sigmoid(model(slices))
    finally:
        model.train(was_training)
