"""Architectures the pipeline prunes, behind one name -> builder registry.

Pruning scorers (PX gating, SynFlow linearisation) work by hooking modules, so every convolutional model
built here keeps three invariants the scorers rely on (the transformer in ``training/vit.py`` is the
exception: GELU activations, which PX refuses by name):

* every non-linearity is its own ``nn.ReLU()`` module instance, never inplace and never ``F.relu`` in a
  forward, and each instance runs exactly once per forward (a hook sees one activation per module);
* pooling is an ``nn.MaxPool2d`` / ``nn.AvgPool2d`` / ``nn.AdaptiveAvgPool2d`` module, so max-pool gating can
  follow the real net's argmax;
* prunable layers are exactly the ``Conv1d`` / ``Conv2d`` / ``Linear`` modules, and the classifier is always
  the attribute ``fc`` (so an ``ignore: [fc.weight]`` config reads the same for every family).

Bias conventions, matching the reference code each family comes from:

==========  ==========================  ===================================================
model       conv bias                   source
==========  ==========================  ===================================================
mlp         Linear layers have bias     OpenLTH ``mnist_lenet_300_100``
conv1d      yes                         MNIST-1D reference CNN (Greydanus)
convnet     yes                         Zhao & Bilen ``ConvNet`` (dataset condensation)
resnetD     no (followed by BN)         OpenLTH ``cifar_resnet_D``, 1x1-conv shortcuts
vggX_bn     **yes** (before BN)         OpenLTH ``cifar_vgg_X`` / Synaptic-Flow lottery VGG
==========  ==========================  ===================================================

The ``fc`` classifier always has a bias. Initialisation: Kaiming-normal (fan-in, ReLU gain) on every
conv/linear weight as in OpenLTH, conv/linear biases zero as in Synaptic-Flow's lottery models, norm
layers at weight 1 and bias 0 (OpenLTH's CIFAR default draws BN weights uniformly; we use the plain 1/0
start instead).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from training.registry import Registry, origin_of
from training.settings import (  # noqa: F401 (re-exported: the options live with the settings)
    MODEL_DECLS, MODEL_OPTIONS, TV_PREFIX, Declared, Conv1dOptions, ConvNetOptions, MLPOptions, ModelConfig, ModelOptions, ResNetOptions,
    TorchvisionOptions, VGGOptions, options_class, torchvision_names,
)

__all__ = [
    "MODELS",
    "ModelConfig",
    "ModelEntry",
    "TV_PREFIX",
    "create_model",
    "model_names",
    "torchvision_model_names",
]

InputShape = tuple[int, ...]


@dataclass(frozen=True)
class ModelEntry:
    options_cls: type[ModelOptions]
    build: Callable[[Any, InputShape, int], nn.Module]


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, options: type[ModelOptions] | None = None, version: int = 1
                   ) -> Callable[[Callable], Callable]:
    """Register a builder ``(options, input_shape, num_classes) -> nn.Module`` under ``name`` (a user's model
    the same way as the built-ins, whose options are declared in ``training.settings``). ``options``
    validates ``model.options``; ``version`` > 1 salts every key built from this model."""

    def deco(build: Callable[[Any, InputShape, int], nn.Module]) -> Callable:
        if name in MODEL_OPTIONS:
            opts = MODEL_OPTIONS[name]
        else:
            opts = options or ModelOptions
            MODEL_DECLS.register(name, origin=origin_of(build.__module__))(Declared(opts, version))
        MODELS.register(name)(ModelEntry(opts, build))
        return build

    return deco


def model_names() -> list[str]:
    """Registered names only; any torchvision classifier is also reachable as ``tv:<name>``."""
    return MODELS.names()


def torchvision_model_names() -> list[str]:
    return list(torchvision_names())


def _entry_for(name: str) -> ModelEntry:
    options = options_class(name)  # an unknown name: the schema's own message
    if name.startswith(TV_PREFIX):
        return ModelEntry(options, functools.partial(_build_torchvision, name[len(TV_PREFIX):]))
    return MODELS.get(name)


def create_model(
    cfg_or_name: ModelConfig | str,
    input_shape: Sequence[int],
    num_classes: int,
    **options: Any,
) -> nn.Module:
    """Build a freshly initialised model; ``input_shape`` excludes the batch dimension.

    Keyword options override those of a passed ``ModelConfig``. Seed with ``torch.manual_seed`` first for
    a reproducible initialisation.
    """
    if isinstance(cfg_or_name, str):
        cfg = ModelConfig(name=cfg_or_name, options=options)
    else:
        cfg = cfg_or_name
        if options:
            cfg = ModelConfig(name=cfg.name, options={**cfg.options, **options})
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be non-empty positive sizes (no batch dim), got {shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    entry = _entry_for(cfg.name)
    return entry.build(cfg.parsed_options(), shape, int(num_classes))


# --------------------------------------------------------------------------------------------- helpers
def _openlth_init(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                # Zero, as Synaptic-Flow's lottery models do: SynFlow scores the abs()'d net, where
                # PyTorch's default non-zero biases open extra flow that makes it collapse layers at
                # 10^5 compression on VGG-16 (scripts/layer_collapse_output.txt).
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _require_image(name: str, shape: InputShape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"{name} expects input_shape (C, H, W), got {shape}")
    return shape[0], shape[1], shape[2]


class _Classifier(nn.Module):
    """Feature extractor + linear ``fc``; ``embed`` is what distribution-matching distillation reads."""

    fc: nn.Linear

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


# --------------------------------------------------------------------------------------------- mlp
class MLP(_Classifier):
    """LeNet-300-100: the dense baseline of the original lottery-ticket experiments."""

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_features
        for w in widths:
            layers += [nn.Linear(prev, w), nn.ReLU()]
            prev = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(prev, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


@register_model("mlp")
def _build_mlp(opts: MLPOptions, shape: InputShape, num_classes: int) -> nn.Module:
    return _openlth_init(MLP(math.prod(shape), opts.widths, num_classes))


# --------------------------------------------------------------------------------------------- conv1d
class Conv1dNet(_Classifier):
    """1-D CNN for MNIST-1D: strided convs halve the length while it is >= 8, keeping position info for fc.

    Default size (width 32, depth 3, kernel 5) reaches about 96-97% test accuracy on 16k MNIST-1D samples in
    20 epochs with Adam at lr 3e-3, batch 100 (about 94% at lr 1e-3).
    """

    def __init__(self, in_channels: int, length: int, width: int, depth: int, kernel_size: int,
                 num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        pad = kernel_size // 2
        for _ in range(depth):
            stride = 2 if length >= 8 else 1
            layers += [nn.Conv1d(channels, width, kernel_size, stride=stride, padding=pad), nn.ReLU()]
            length = (length + 2 * pad - kernel_size) // stride + 1
            if length < 1:
                raise ValueError(f"kernel_size {kernel_size} too large for the input length")
            channels = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(channels * length, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten(1)


@register_model("conv1d")
def _build_conv1d(opts: Conv1dOptions, shape: InputShape, num_classes: int) -> nn.Module:
    if len(shape) != 2:
        raise ValueError(f"conv1d expects input_shape (C, L), got {shape}")
    net = Conv1dNet(shape[0], shape[1], opts.width, opts.depth, opts.kernel_size, num_classes)
    return _openlth_init(net)


# --------------------------------------------------------------------------------------------- convnet
class ConvNet(_Classifier):
    """ConvNet-D of the dataset-distillation literature (Zhao & Bilen), the network DM/DC/MTT distil with.

    Pools only while both spatial sizes are >= 2, so the same depth works from 8x8 digits to 32x32 CIFAR.
    """

    def __init__(self, in_channels: int, size: tuple[int, int], width: int, depth: int,
                 norm: str, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        h, w = size
        for _ in range(depth):
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
            if norm == "instance":
                layers.append(nn.GroupNorm(width, width, affine=True))
            elif norm == "batch":
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU())
            if h >= 2 and w >= 2:
                layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
                h, w = h // 2, w // 2
            channels = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels * h * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)


@register_model("convnet")
def _build_convnet(opts: ConvNetOptions, shape: InputShape, num_classes: int) -> nn.Module:
    c, h, w = _require_image("convnet", shape)
    return _openlth_init(ConvNet(c, (h, w), opts.width, opts.depth, opts.norm, num_classes))


# --------------------------------------------------------------------------------------------- resnet
class BasicBlock(nn.Module):
    def __init__(self, f_in: int, f_out: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.shortcut: nn.Module
        if downsample or f_in != f_out:
            # OpenLTH projects with a 1x1 conv (option B), not He et al.'s zero-padding (option A).
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False), nn.BatchNorm2d(f_out)
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(_Classifier):
    """OpenLTH ``cifar_resnet_D``: the ResNet-20 of the lottery-ticket rewinding experiments."""

    def __init__(self, in_channels: int, depth: int, width: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        blocks: list[nn.Module] = []
        f_in = width
        for stage in range(3):
            f_out = width * 2**stage
            for i in range(n):
                blocks.append(BasicBlock(f_in, f_out, downsample=stage > 0 and i == 0))
                f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(f_in, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        return self.pool(self.blocks(x)).flatten(1)


def _resnet_builder(depth: int) -> Callable[[ResNetOptions, InputShape, int], nn.Module]:
    def build(opts: ResNetOptions, shape: InputShape, num_classes: int) -> nn.Module:
        c, _, _ = _require_image(f"resnet{depth}", shape)
        return _openlth_init(CifarResNet(c, depth, opts.width, num_classes))

    return build


for _depth in (20, 56):
    register_model(f"resnet{_depth}")(_resnet_builder(_depth))
del _depth


# --------------------------------------------------------------------------------------------- vgg
VGG_PLANS: dict[str, list[int | str]] = {
    "vgg11_bn": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
}


class ConvBNReLU(nn.Module):
    """Named ``conv``/``bn`` like OpenLTH's ConvModule, so name-based rules (PX's 'bn' skip) carry over."""

    def __init__(self, f_in: int, f_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(f_in, f_out, kernel_size=3, padding=1)  # bias=True, as in OpenLTH
        self.bn = nn.BatchNorm2d(f_out)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class CifarVGG(_Classifier):
    """OpenLTH ``cifar_vgg_X`` (= Synaptic-Flow's lottery VGG with BN), the SynFlow/layer-collapse testbed."""

    def __init__(self, in_channels: int, size: tuple[int, int], plan: Sequence[int | str],
                 width: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        h, w = size
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                h, w = h // 2, w // 2
                if h < 1 or w < 1:
                    raise ValueError(f"input {size} too small for this VGG's max-pools (need >= 16x16)")
            else:
                out = max(1, int(item) * width // 64)
                layers.append(ConvBNReLU(channels, out))
                channels = out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(x)).flatten(1)


def _vgg_builder(name: str) -> Callable[[VGGOptions, InputShape, int], nn.Module]:
    def build(opts: VGGOptions, shape: InputShape, num_classes: int) -> nn.Module:
        c, h, w = _require_image(name, shape)
        return _openlth_init(CifarVGG(c, (h, w), VGG_PLANS[name], opts.width, num_classes))

    return build


for _name in VGG_PLANS:
    register_model(_name)(_vgg_builder(_name))
del _name


# --------------------------------------------------------------------------------------------- torchvision
class ChannelAdapter(nn.Module):
    """Feeds a C-channel input to a net whose stem expects 3 channels.

    C < 3 repeats the channels cyclically (grey -> RGB), adding no parameters; C > 3 mixes them with a
    bias-free 1x1 conv, which is then a prunable layer like any other. The wrapped net is ``self.model``.
    """

    def __init__(self, model: nn.Module, in_channels: int, expected: int = 3) -> None:
        super().__init__()
        self.model = model
        self.in_channels = in_channels
        self.mix: nn.Module | None = None
        self.index: list[int] = []
        if in_channels < expected:
            self.index = [i % in_channels for i in range(expected)]
        else:
            self.mix = nn.Conv2d(in_channels, expected, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mix(x) if self.mix is not None else x[:, self.index]
        return self.model(x)


def _build_torchvision(tv_name: str, opts: TorchvisionOptions, shape: InputShape,
                       num_classes: int) -> nn.Module:
    """Untrained torchvision classifier, with its own init; inplace ReLUs are switched off for hooks.

    Caveat: some torchvision nets also call ``F.relu`` (or use other activations) inside forward; hook-based
    scorers see only the ``nn.ReLU`` modules there.
    """
    import torchvision

    c, _, _ = _require_image(f"{TV_PREFIX}{tv_name}", shape)
    model = torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes, **opts.kwargs)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    if c != 3:
        model = ChannelAdapter(model, c)
    return model


from . import vit  # noqa: E402,F401  (one file per family as families grow; it registers itself here)
