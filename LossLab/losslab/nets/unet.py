"""A configurable 2D / 3D U-Net covering the architectures of the two papers LossLab reproduces.

- ice-editing-shahin2023, Sec. 3.2: encoder blocks of two 3x3x3 convolutions, each followed by batch norm and
  ReLU, then 2x2x2 max pooling; filters 16-32-64-128 (segmentation model) or half of that with 3 input
  channels (image, initial segmentation, scribble heatmap) for the editing model; symmetric decoder.
- label-set-losses-fidon2021, Sec. 4: a 3D U-Net with 5 levels, leaky ReLU and instance normalisation.

Interpretation (the papers leave it open): ``features`` lists the width of every level, the last one being the
bottleneck, so ``features=(16, 32, 64, 128)`` gives 4 levels and 3 poolings. Each decoder level upsamples with
a 2x2x2 transposed convolution to the width of the matching encoder level, concatenates the skip connection
and applies the same two-convolution block. A final 1x1x1 convolution gives ``out_channels`` logits.

Input sizes that do not divide by ``2 ** (levels - 1)`` are zero-padded (symmetrically, extra voxel at the
end) before the network and the logits are cropped back, so the output always has the input's size.

MONAI's ``BasicUNet`` fixes the depth at 5 levels and ``DynUNet`` downsamples with strided convolutions, so
neither matches the papers exactly; MONAI is also not a dependency of the core. The blocks here are
plain torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "instance", "group", "none")
ACTIVATIONS = ("relu", "leaky_relu", "prelu")
UPSAMPLINGS = ("transpose", "interpolate")


def _conv(dims: int):
    return nn.Conv3d if dims == 3 else nn.Conv2d


def _norm(kind: str, dims: int, channels: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d)(channels, affine=True)
    if kind == "group":
        groups = 8 if channels % 8 == 0 else 1
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


def _act(kind: str, negative_slope: float) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leaky_relu":
        return nn.LeakyReLU(negative_slope, inplace=True)
    return nn.PReLU()


class ConvBlock(nn.Sequential):
    """Two (convolution 3^d, normalisation, activation) units."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        norm: str,
        act: str,
        negative_slope: float,
        dropout: float = 0.0,
    ):
        conv = _conv(dims)
        bias = norm == "none"
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(
                conv(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=bias)
            )
            layers.append(_norm(norm, dims, out_channels))
            layers.append(_act(act, negative_slope))
        if dropout > 0:
            layers.append((nn.Dropout3d if dims == 3 else nn.Dropout2d)(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net with max-pooling encoder, transposed-convolution decoder and skip connections.

    Args:
        in_channels: number of input channels (1 for an image; 3 for the ICE editing model).
        out_channels: number of output logits channels (classes, background included).
        features: width of each level, shallow to deep; the last is the bottleneck. At least 2 levels.
        spatial_dims: 2 or 3.
        norm: "batch" | "instance" | "group" | "none".
        act: "relu" | "leaky_relu" | "prelu".
        negative_slope: slope of the leaky ReLU (0.01, as nnU-Net and the label-set paper's code).
        upsample: "transpose" (learned 2^d transposed convolution) or "interpolate" (nearest + 1x1 conv).
        dropout: channel dropout after each block (0 disables).

    Shapes:
        input ``(B, in_channels, *spatial)`` of any size; output ``(B, out_channels, *spatial)`` (logits).

    Raises:
        ValueError: an option is out of range or unknown (the message names it and the value received).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (16, 32, 64, 128),
        spatial_dims: int = 3,
        norm: str = "batch",
        act: str = "relu",
        negative_slope: float = 0.01,
        upsample: str = "transpose",
        dropout: float = 0.0,
    ):
        super().__init__()
        features = tuple(int(f) for f in features)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(
                f"in_channels and out_channels must be >= 1, got in_channels={in_channels!r}, "
                f"out_channels={out_channels!r}"
            )
        if len(features) < 2 or any(f < 1 for f in features):
            raise ValueError(f"features must list at least 2 positive level widths, got {list(features)!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
        if upsample not in UPSAMPLINGS:
            raise ValueError(f"upsample must be one of {UPSAMPLINGS}, got {upsample!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.features = features
        self.spatial_dims = spatial_dims
        self.divisor = 2 ** (len(features) - 1)
        block = dict(norm=norm, act=act, negative_slope=float(negative_slope), dropout=float(dropout))
        conv = _conv(spatial_dims)
        self.encoders = nn.ModuleList()
        previous = self.in_channels
        for width in features:
            self.encoders.append(ConvBlock(spatial_dims, previous, width, **block))
            previous = width
        self.pool = (nn.MaxPool3d if spatial_dims == 3 else nn.MaxPool2d)(2)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(len(features) - 2, -1, -1):
            width = features[level]
            if upsample == "transpose":
                up_conv = (nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d)(
                    previous, width, 2, stride=2
                )
                self.ups.append(up_conv)
            else:
                self.ups.append(nn.Sequential(nn.Upsample(scale_factor=2), conv(previous, width, 1)))
            self.decoders.append(ConvBlock(spatial_dims, 2 * width, width, **block))
            previous = width
        self.head = conv(previous, self.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input of shape (B, {self.in_channels}, {', '.join(['*'] * self.spatial_dims)}), "
                f"got {tuple(x.shape)}"
            )
        spatial = x.shape[2:]
        pads = []
        for size in reversed(spatial):  # F.pad lists the last axis first
            extra = (-size) % self.divisor
            pads += [extra // 2, extra - extra // 2]
        padded = any(pads)
        if padded:
            x = F.pad(x, pads)
        skips = []
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        skips.pop()  # the bottleneck output is x itself
        for up, decoder in zip(self.ups, self.decoders):
            x = up(x)
            x = decoder(torch.cat([skips.pop(), x], dim=1))
        x = self.head(x)
        if padded:
            slices = [slice(None), slice(None)]
            for axis, size in enumerate(spatial):
                start = pads[2 * (len(spatial) - 1 - axis)]
                slices.append(slice(start, start + size))
            x = x[tuple(slices)]
        return x


def fuse_batch_norm(model: nn.Module) -> nn.Module:
    """Fold every (convolution, BatchNorm) pair of a :class:`UNet` into the convolution, in place.

    For inference only (the model must be in eval mode): the output is the same up to float rounding and
    the forward pass skips the normalisation layers. Instance and group norm are left as they are.
    Returns the model.
    """
    if model.training:
        raise ValueError("fuse_batch_norm needs a model in eval mode (call model.eval() first)")
    for module in model.modules():
        if not isinstance(module, ConvBlock):
            continue
        children = list(module._modules.items())
        for (_, conv), (norm_name, norm) in zip(children, children[1:]):
            if isinstance(conv, (nn.Conv2d, nn.Conv3d)) and isinstance(
                norm, (nn.BatchNorm2d, nn.BatchNorm3d)
            ):
                fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, norm)
                conv.weight = fused.weight
                conv.bias = fused.bias
                module._modules[norm_name] = nn.Identity()
    return model
