"""Masks in other forms: ``torch.nn.utils.prune``, and physically smaller channel-pruned models.

``to_torch_prune`` / ``from_torch_prune`` translate between a ``Mask`` (name -> bool tensor) and
PyTorch's own pruning reparametrisation (``weight_orig`` parameter + ``weight_mask`` buffer + a forward
pre-hook per module), so masks found here can be handed to tools that expect that form and back.

``export_channel_pruned`` turns a mask that drops whole output channels (PDP's ``channel`` structure,
or any mask with all-False rows) into a dense model with fewer channels.

Export semantics (what "the same outputs" means)
------------------------------------------------
The reference is **the masked model in eval mode**: the original model with ``mask.apply_`` (pruned
weights zero, every bias and normalisation parameter untouched). That is the model whose accuracy the
pipeline reports, so the export reproduces it *exactly* (to float rounding) rather than a different,
"cleaner" network. Consequence: a dropped output channel is not silent. Its weights are zero, so its
pre-activation is its bias, a constant; the channel-wise layers after it (BatchNorm with running
statistics, instance norm, ReLU, pools) map that constant to another constant (instance norm maps it to
its shift ``beta``, eval-mode BatchNorm to ``(b - mean) / sqrt(var + eps) * gamma + beta``). The next
prunable layer therefore receives a constant input on that channel, and the export **folds** that
constant into the next layer instead of computing it:

* next layer Linear (after a flatten, channel ``c`` -> features ``c*S .. c*S+S-1``): exactly
  ``W[:, dropped] @ const`` added to its bias;
* next layer conv without zero padding (padding 0, or a non-zero ``padding_mode``, where the padded
  border is constant too): the summed kernel times the constant, added to its bias;
* next layer conv with zero padding: the contribution is not uniform (border positions see padded
  zeros), so it cannot live in a bias. The layer becomes a ``ConstantInputConv1d/2d`` (a subclass of
  ``nn.Conv1d/2d``) holding one extra buffer ``const_kernel`` (``out x 1 x k``) = the dropped channels'
  kernels weighted by their constants; its forward adds ``conv(ones, const_kernel)`` with the same
  stride/padding/dilation, which is the exact border-aware contribution for any input size.

Other choices: the network's last prunable layer keeps every output (its rows are the logits; a zero
row outputs its bias, as in the masked model); a layer whose rows are all dropped keeps one zero row,
so no layer has zero width; a row with some kept weights stays (its pruned entries stay zero); layers
the mask does not name (``prune.ignore``) keep every row. Eval-mode BatchNorm is the reference: in train
mode BatchNorm would normalise a constant channel to ``beta`` instead, and the folded constants stand
for eval mode. Supported: chains of Conv1d/Conv2d/Linear (groups 1), BatchNorm, instance norm
(GroupNorm with one channel per group, InstanceNorm), element-wise activations, dropout, pools and
flatten -- the ``mlp``, ``conv1d``, ``convnet``, ``vgg*_bn`` models and plain ``nn.Sequential`` stacks.
Residual networks are out of scope (a channel is shared by every block of a stage through the skip
additions, so removing it needs coordinated masks) and raise ``NotImplementedError``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from .mask import PRUNABLE_TYPES, Mask

__all__ = [
    "to_torch_prune",
    "from_torch_prune",
    "export_channel_pruned",
    "ConstantInputConv1d",
    "ConstantInputConv2d",
    "channel_counts",
]


# --------------------------------------------------------------------------------------------- torch prune
def _module_of(model: nn.Module, name: str) -> nn.Module:
    if name != "weight" and not name.endswith(".weight"):
        raise KeyError(f"mask entry {name!r} is not a '<module>.weight' name")
    mod_name = name[: -len(".weight")] if name != "weight" else ""
    try:
        module = model.get_submodule(mod_name)
    except AttributeError:
        raise KeyError(f"mask entry {name!r} names no module of the model") from None
    if not isinstance(module, PRUNABLE_TYPES):
        raise KeyError(f"mask entry {name!r} names a {type(module).__name__}, not a Conv1d/Conv2d/Linear")
    return module


def to_torch_prune(model: nn.Module, mask: Mask) -> nn.Module:
    """Put ``mask`` on ``model`` in ``torch.nn.utils.prune`` form, in place; returns ``model``.

    Each masked module gets ``weight_orig`` (the parameter, values untouched), a ``weight_mask`` buffer
    (float, 1 = kept) and the pruning forward pre-hook, exactly as ``prune.custom_from_mask`` makes them;
    ``prune.is_pruned(model)`` is then True and the forward equals that of the masked model. Every entry
    is checked before any module is changed, so a bad mask leaves the model as it was. A module that is
    already in that form is an error (combining masks silently would change the experiment).
    """
    targets = []
    for name, m in mask.items():
        module = _module_of(model, name)
        if hasattr(module, "weight_orig") or hasattr(module, "weight_mask"):
            raise ValueError(
                f"{name} is already pruned in torch.nn.utils.prune form; "
                "call from_torch_prune(model, remove=True) first"
            )
        if tuple(m.shape) != tuple(module.weight.shape):
            raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, weight has {tuple(module.weight.shape)}")
        targets.append((module, m))
    for module, m in targets:
        prune.custom_from_mask(module, "weight", mask=m.to(device=module.weight.device, dtype=module.weight.dtype))
    return model


def from_torch_prune(model: nn.Module, remove: bool = False) -> Mask:
    """Read the ``weight_mask`` buffers of a ``torch.nn.utils.prune``-pruned model into a ``Mask``.

    Names follow the ``Mask`` convention (``layer.weight``), in module order; tensors are bool, on the
    CPU. With ``remove=True`` the pruning is made permanent (``prune.remove``): ``weight`` becomes a
    plain parameter holding ``weight_orig * weight_mask`` and the hook, ``weight_orig`` and
    ``weight_mask`` are gone. Only ``weight`` masks are read (the ``Mask`` convention has no biases).
    """
    out = Mask()
    for mod_name, module in model.named_modules():
        buffers = dict(module.named_buffers(recurse=False))
        if "weight_mask" not in buffers or "weight_orig" not in dict(module.named_parameters(recurse=False)):
            continue
        name = f"{mod_name}.weight" if mod_name else "weight"
        out[name] = buffers["weight_mask"].detach().to(torch.bool).cpu()
        if remove:
            prune.remove(module, "weight")
    if not out:
        raise ValueError("the model has no torch.nn.utils.prune weight masks (no 'weight_mask' buffers)")
    return out


# --------------------------------------------------------------------------------------------- export
class _ConstantInputMixin:
    """Adds ``conv(ones, const_kernel)``: the exact contribution of removed constant input channels."""

    const_kernel: torch.Tensor
    _nd: int

    def _init_const(self) -> None:
        shape = (self.out_channels, 1, *self.kernel_size)  # type: ignore[attr-defined]
        w = self.weight  # type: ignore[attr-defined]
        self.register_buffer("const_kernel", torch.zeros(shape, device=w.device, dtype=w.dtype))  # type: ignore[attr-defined]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)  # type: ignore[misc]
        ones = x.new_ones((1, 1, *x.shape[-self._nd:]))
        conv = F.conv1d if self._nd == 1 else F.conv2d
        extra = conv(ones, self.const_kernel, None, self.stride, self.padding, self.dilation)  # type: ignore[attr-defined]
        return out + (extra.squeeze(0) if x.dim() == self._nd + 1 else extra)


class ConstantInputConv1d(_ConstantInputMixin, nn.Conv1d):
    """``nn.Conv1d`` plus a constant-input term; see the module docstring (zero-padded folding)."""

    _nd = 1

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_const()


class ConstantInputConv2d(_ConstantInputMixin, nn.Conv2d):
    """``nn.Conv2d`` plus a constant-input term; see the module docstring (zero-padded folding)."""

    _nd = 2

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_const()


_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
)
_IDENTITY = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm1d, nn.InstanceNorm2d)
_SUPPORTED_HINT = (
    "chain models: mlp, conv1d, convnet, vgg11_bn/vgg16_bn, or an nn.Sequential of Conv1d/Conv2d/Linear, "
    "BatchNorm/instance norm, activations, dropout, pools and Flatten"
)


@dataclass
class _Step:
    name: str | None  # qualified module name (None: the implicit flatten of a model's forward)
    module: nn.Module | None  # None: flatten


def _sequence(seq: nn.Module, prefix: str) -> list[_Step]:
    from training.models import ConvBNReLU

    steps: list[_Step] = []
    for child_name, child in seq.named_children():
        qual = f"{prefix}.{child_name}" if prefix else child_name
        if type(child) is nn.Sequential:
            steps += _sequence(child, qual)
        elif type(child) is ConvBNReLU:
            steps += [_Step(f"{qual}.conv", child.conv), _Step(f"{qual}.bn", child.bn), _Step(f"{qual}.relu", child.relu)]
        elif type(child) is nn.Flatten:
            if child.start_dim != 1 or child.end_dim != -1:
                raise NotImplementedError(f"{qual}: only Flatten(1, -1) is supported, got {child}")
            steps.append(_Step(qual, None))
        else:
            steps.append(_Step(qual, child))
    return steps


def _chain(model: nn.Module) -> list[_Step]:
    """The model's forward as a flat list of layers, for the architectures whose forward is a chain."""
    from training.models import MLP, CifarResNet, CifarVGG, Conv1dNet, ConvNet

    kind = type(model)
    if kind is MLP:
        return [_Step(None, None), *_sequence(model.layers, "layers"), _Step("fc", model.fc)]
    if kind is Conv1dNet:
        return [*_sequence(model.layers, "layers"), _Step(None, None), _Step("fc", model.fc)]
    if kind is ConvNet:
        return [*_sequence(model.features, "features"), _Step(None, None), _Step("fc", model.fc)]
    if kind is CifarVGG:
        return [*_sequence(model.layers, "layers"), _Step("pool", model.pool), _Step(None, None), _Step("fc", model.fc)]
    if kind is nn.Sequential:
        return _sequence(model, "")
    if kind is CifarResNet:
        raise NotImplementedError(
            "export_channel_pruned does not support CifarResNet (resnet20/resnet56): residual connections "
            "tie a channel to every block of its stage through the skip additions; supported: " + _SUPPORTED_HINT
        )
    raise NotImplementedError(f"export_channel_pruned does not support model type {kind.__name__}; supported: {_SUPPORTED_HINT}")


@dataclass
class _State:
    """The channel space flowing between layers: which channels survive, and the dropped ones' constant."""

    channels: int | None = None  # size of the full (unpruned) space; None before the first layer
    kept: torch.Tensor | None = None  # indices of surviving channels; None = all survive
    const: torch.Tensor | None = None  # float64 [channels]: value of each dropped channel (kept: unused)
    space: str = "features"  # "features" (Linear output / flattened) or "channels" (conv feature maps)
    flatten_pending: bool = False

    @property
    def pruned(self) -> bool:
        return self.kept is not None


def _expand_flatten(state: _State, in_features: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    per_channel, rem = divmod(in_features, state.channels)
    if rem:
        raise NotImplementedError(
            f"{name}: {in_features} input features are not a whole number of positions per channel "
            f"for {state.channels} channels"
        )
    offsets = torch.arange(per_channel)
    kept = (state.kept[:, None] * per_channel + offsets).flatten()
    return kept, state.const.repeat_interleave(per_channel)


def _kept_rows(mask: torch.Tensor) -> torch.Tensor:
    rows = mask.flatten(1).any(dim=1).nonzero().flatten()
    return rows if len(rows) else torch.zeros(1, dtype=torch.long)


def _new_prunable(
    name: str, module: nn.Module, mask: torch.Tensor | None, keep_all_rows: bool, state: _State
) -> tuple[nn.Module, _State]:
    if type(module) not in PRUNABLE_TYPES:
        raise NotImplementedError(f"{name}: {type(module).__name__} (a subclass) cannot be exported")
    is_conv = isinstance(module, (nn.Conv1d, nn.Conv2d))
    if is_conv and module.groups != 1:
        raise NotImplementedError(f"{name}: grouped convolutions (groups={module.groups}) are not supported")
    weight = module.weight.detach()
    w = weight * mask.to(weight.device, weight.dtype) if mask is not None else weight
    n_out, n_in = w.shape[0], w.shape[1]

    in_idx = torch.arange(n_in)
    const_in: torch.Tensor | None = None
    if state.pruned:
        if state.flatten_pending:
            if is_conv:
                raise NotImplementedError(f"{name}: a convolution after a flatten is not a supported chain")
            in_idx, const_in = _expand_flatten(state, n_in, name)
        else:
            if (state.space == "channels") != is_conv:
                raise NotImplementedError(
                    f"{name}: {type(module).__name__} reading a {state.space} space without a flatten is not a supported chain"
                )
            in_idx, const_in = state.kept, state.const
        if len(const_in) != n_in:
            raise ValueError(f"{name}: expects {n_in} inputs, the previous layer gives {len(const_in)}")

    bias = module.bias.detach().double() if module.bias is not None else torch.zeros(n_out, dtype=torch.float64)
    bias = bias.cpu()
    folded = torch.zeros(n_out, dtype=torch.float64)
    kernel = None
    if const_in is not None:
        dropped = torch.ones(n_in, dtype=torch.bool)
        dropped[in_idx] = False
        values = const_in[dropped]
        if values.abs().sum() > 0:
            wd = w[:, dropped.to(w.device)].double().cpu()
            if not is_conv:
                folded += wd @ values
            else:
                k = torch.einsum("oc...,c->o...", wd, values).unsqueeze(1)
                no_zero_pad = module.padding_mode != "zeros" or module.padding == "valid" or (
                    not isinstance(module.padding, str) and all(p == 0 for p in module.padding)
                )
                if no_zero_pad:
                    folded += k.flatten(1).sum(dim=1)
                else:
                    kernel = k

    out_idx = torch.arange(n_out) if keep_all_rows or mask is None else _kept_rows(mask.cpu())
    has_bias = module.bias is not None or bool(folded.abs().sum() > 0)
    factory = {"device": weight.device, "dtype": weight.dtype}
    if not is_conv:
        new: nn.Module = nn.Linear(len(in_idx), len(out_idx), bias=has_bias, **factory)
    else:
        cls = {
            (nn.Conv1d, False): nn.Conv1d, (nn.Conv2d, False): nn.Conv2d,
            (nn.Conv1d, True): ConstantInputConv1d, (nn.Conv2d, True): ConstantInputConv2d,
        }[(type(module), kernel is not None)]
        new = cls(
            len(in_idx), len(out_idx), module.kernel_size, stride=module.stride, padding=module.padding,
            dilation=module.dilation, bias=has_bias, padding_mode=module.padding_mode, **factory,
        )
    with torch.no_grad():
        dev_out, dev_in = out_idx.to(weight.device), in_idx.to(weight.device)
        new.weight.copy_(w.index_select(0, dev_out).index_select(1, dev_in))
        if has_bias:
            new.bias.copy_((bias + folded)[out_idx].to(**factory))
        if kernel is not None:
            new.const_kernel.copy_(kernel[out_idx].to(**factory))
    new.weight.requires_grad_(module.weight.requires_grad)
    new.train(module.training)

    # A dropped row is all zero in the masked model, so its output is exactly its bias.
    next_kept = None if len(out_idx) == n_out else out_idx
    return new, _State(n_out, next_kept, bias if next_kept is not None else None,
                       "channels" if is_conv else "features")


def _new_norm(name: str, module: nn.Module, state: _State) -> tuple[nn.Module, _State]:
    n = state.channels
    kept, const = state.kept, state.const
    if isinstance(module, nn.GroupNorm):
        if module.num_channels != n:
            raise ValueError(f"{name}: normalises {module.num_channels} channels, the previous layer gives {n}")
        if module.num_groups != module.num_channels:
            raise NotImplementedError(
                f"{name}: GroupNorm with {module.num_groups} groups over {module.num_channels} channels mixes "
                "channels in its statistics; only one channel per group (instance norm) can be sliced"
            )
        beta = module.bias.detach().double().cpu() if module.affine else torch.zeros(n, dtype=torch.float64)
        new_const = beta.clone()  # a constant channel normalises to 0, then gets the shift
        new: nn.Module = nn.GroupNorm(len(kept), len(kept), eps=module.eps, affine=module.affine,
                                      device=_device_of(module), dtype=_dtype_of(module))
        tensors = ["weight", "bias"] if module.affine else []
    else:
        if module.num_features != n:
            raise ValueError(f"{name}: normalises {module.num_features} channels, the previous layer gives {n}")
        gamma = module.weight.detach().double().cpu() if module.affine else torch.ones(n, dtype=torch.float64)
        beta = module.bias.detach().double().cpu() if module.affine else torch.zeros(n, dtype=torch.float64)
        if module.track_running_stats and module.running_mean is not None:
            mean = module.running_mean.detach().double().cpu()
            var = module.running_var.detach().double().cpu()
            new_const = (const - mean) / torch.sqrt(var + module.eps) * gamma + beta
        else:  # eval mode with batch/instance statistics: a constant channel normalises to 0
            new_const = beta.clone()
        new = type(module)(len(kept), eps=module.eps, momentum=module.momentum, affine=module.affine,
                           track_running_stats=module.track_running_stats,
                           device=_device_of(module), dtype=_dtype_of(module))
        tensors = (["weight", "bias"] if module.affine else []) + (
            ["running_mean", "running_var"] if module.running_mean is not None else []
        )
        if module.num_batches_tracked is not None:
            new.num_batches_tracked.copy_(module.num_batches_tracked)
    with torch.no_grad():
        for t in tensors:
            src = getattr(module, t)
            getattr(new, t).copy_(src.detach().index_select(0, kept.to(src.device)))
    new.train(module.training)
    return new, _State(n, kept, new_const, state.space, state.flatten_pending)


def _device_of(module: nn.Module) -> torch.device | None:
    t = next(iter(list(module.parameters()) + list(module.buffers())), None)
    return t.device if t is not None else None


def _dtype_of(module: nn.Module) -> torch.dtype | None:
    t = next((p for p in list(module.parameters()) + list(module.buffers()) if p.is_floating_point()), None)
    return t.dtype if t is not None else None


def _check_pool(name: str, module: nn.Module) -> None:
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d)):
        pad = module.padding if isinstance(module.padding, tuple) else (module.padding,)
        if (any(p != 0 for p in pad) and module.count_include_pad) or module.ceil_mode:
            raise NotImplementedError(
                f"{name}: an average pool with zero padding or ceil_mode would turn a removed channel's "
                "constant into a position-dependent map"
            )


def export_channel_pruned(model: nn.Module, mask: Mask) -> nn.Module:
    """A physically smaller dense copy of ``model`` whose eval-mode outputs equal the masked model's.

    Output channels whose mask rows are all False are removed from each prunable layer, together with
    the matching slices of the norm layer after it and the input channels (or flattened features) of
    the next prunable layer; the constants dropped channels still feed forward are folded into the next
    layer (see the module docstring for the exact semantics). The result is a deep copy with the same
    class and module names (``fc``, ``layers.1.conv``, ...), so its ``state_dict`` keys line up with the
    original's; ``model`` is not changed. Raises ``NotImplementedError`` for architectures that are not
    chains (residual nets) and ``ValueError`` for a mask that does not fit the model.
    """
    if prune.is_pruned(model):
        raise ValueError("the model is in torch.nn.utils.prune form; call from_torch_prune(model, remove=True) first")
    steps = _chain(model)
    prunable_steps = [i for i, s in enumerate(steps) if isinstance(s.module, PRUNABLE_TYPES)]
    if not prunable_steps:
        raise ValueError("the model has no Conv1d/Conv2d/Linear layers to export")
    names = {f"{steps[i].name}.weight" for i in prunable_steps}
    unknown = sorted(set(mask) - names)
    if unknown:
        raise ValueError(f"mask entries {unknown} are not prunable layers of the model's chain {sorted(names)}")
    for i in prunable_steps:
        key = f"{steps[i].name}.weight"
        if key in mask and tuple(mask[key].shape) != tuple(steps[i].module.weight.shape):
            raise ValueError(f"mask {key!r} has shape {tuple(mask[key].shape)}, weight has {tuple(steps[i].module.weight.shape)}")

    last = prunable_steps[-1]
    replacements: dict[str, nn.Module] = {}
    state = _State()
    with torch.no_grad():
        for i, step in enumerate(steps):
            module = step.module
            if module is None:  # flatten
                if state.pruned and state.space == "channels":
                    state.flatten_pending = True
                state.space = "features"
                continue
            if isinstance(module, PRUNABLE_TYPES):
                key = f"{step.name}.weight"
                new, state = _new_prunable(step.name, module, mask.get(key), i == last, state)
                replacements[step.name] = new
            elif isinstance(module, (nn.GroupNorm, *_BATCHNORMS)):
                if state.pruned:
                    if state.flatten_pending:
                        raise NotImplementedError(f"{step.name}: a norm layer after a flatten is not supported")
                    new, state = _new_norm(step.name, module, state)
                    replacements[step.name] = new
            elif isinstance(module, _ELEMENTWISE):
                if state.pruned:
                    state.const = module(state.const.clone())
            elif isinstance(module, _IDENTITY):
                pass
            elif isinstance(module, _POOLS):
                if state.pruned:
                    _check_pool(step.name, module)
            else:
                raise NotImplementedError(
                    f"export_channel_pruned cannot handle layer {step.name} ({type(module).__name__}); "
                    f"supported: {_SUPPORTED_HINT}"
                )

    exported = copy.deepcopy(model)
    for name, new in replacements.items():
        parent_name, _, attr = name.rpartition(".")
        setattr(exported.get_submodule(parent_name), attr, new)
    return exported


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Output channels (features) of each prunable layer: a quick way to see what an export removed."""
    return {n: m.weight.shape[0] for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}

