"""The invariants pruning code relies on: module activations, deterministic init, exact layer shapes."""
from __future__ import annotations

import pydantic
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.models import (
    MODELS,
    ModelConfig,
    create_model,
    model_names,
    torchvision_model_names,
)

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)
MNIST1D = (1, 40)

# (name, input shape, batch); the big ones forward a batch of 2 only.
CASES = [
    ("mlp", DIGITS, 4),
    ("mlp", CIFAR, 4),
    ("conv1d", MNIST1D, 4),
    ("convnet", DIGITS, 4),
    ("convnet", CIFAR, 4),
    ("resnet20", CIFAR, 4),
    ("vgg11_bn", CIFAR, 4),
    ("resnet56", CIFAR, 2),
    ("vgg16_bn", CIFAR, 2),
    ("vit", DIGITS, 4),
    ("vit", CIFAR, 4),
]
SMALL_CASES = [c for c in CASES if c[0] not in ("resnet56", "vgg16_bn")]
RELU_CASES = [c for c in SMALL_CASES if c[0] != "vit"]  # the transformer uses GELU (PX refuses it by name)

ACTIVATION_TYPES = tuple(
    getattr(nn, n)
    for n in ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
              "Hardswish", "Hardsigmoid", "Hardtanh", "Sigmoid", "Tanh", "Softplus")
)


def test_every_registered_model_has_a_case() -> None:
    from training.settings import MODEL_DECLS

    # built-ins (a plugin test earlier in the session may have registered more)
    assert {n for n in model_names() if MODEL_DECLS.origin(n) == "built-in"} == {name for name, _, _ in CASES}
    assert set(model_names()) == set(MODELS.names())


@pytest.mark.parametrize(("name", "shape", "batch"), CASES, ids=lambda v: str(v))
def test_builds_and_forwards(name: str, shape: tuple[int, ...], batch: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, shape, 7)
    with torch.no_grad():
        out = model(torch.randn(batch, *shape))
    assert out.shape == (batch, 7)
    assert torch.isfinite(out).all()
    assert isinstance(model.fc, nn.Linear) and model.fc.bias is not None
    assert model.embed(torch.randn(batch, *shape)).shape == (batch, model.fc.in_features)


def _assert_module_activations(model: nn.Module) -> int:
    relus = 0
    for name, m in model.named_modules():
        if isinstance(m, ACTIVATION_TYPES):
            assert type(m) is nn.ReLU, f"{name} is {type(m).__name__}, not nn.ReLU"
            assert m.inplace is False, f"{name} is inplace"
            relus += 1
    assert relus > 0
    return relus


class _ClampReLU(nn.ReLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)


def _swap_relus(model: nn.Module) -> None:
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if type(child) is nn.ReLU:
                setattr(parent, child_name, _ClampReLU())


@pytest.mark.parametrize(("name", "shape", "batch"), RELU_CASES, ids=lambda v: str(v))
def test_activations_are_hookable_relu_modules(name: str, shape: tuple[int, ...], batch: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model(name, shape, 5)
    _assert_module_activations(model)

    # Each ReLU module runs exactly once per forward, so a hook maps to one activation.
    calls: dict[str, int] = {}
    for mod_name, m in model.named_modules():
        if isinstance(m, nn.ReLU):
            calls[mod_name] = 0
            m.register_forward_hook(lambda mod, i, o, n=mod_name: calls.__setitem__(n, calls[n] + 1))
    with torch.no_grad():
        model(torch.randn(2, *shape))
    assert set(calls.values()) == {1}, calls

    # No functional relu anywhere: with the modules swapped out, any relu call would raise.
    _swap_relus(model)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("functional relu called in forward")

    for target, attr in ((F, "relu"), (F, "relu_"), (torch, "relu"), (torch, "relu_"),
                         (torch.Tensor, "relu"), (torch.Tensor, "relu_")):
        monkeypatch.setattr(target, attr, boom)
    with torch.no_grad():
        model(torch.randn(2, *shape))


@pytest.mark.parametrize(("name", "shape", "batch"), SMALL_CASES, ids=lambda v: str(v))
def test_seeded_init_is_deterministic(name: str, shape: tuple[int, ...], batch: int) -> None:
    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return create_model(name, shape, 10).state_dict()

    a, b, c = build(1), build(1), build(2)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_kaiming_normal_init_and_norm_init() -> None:
    torch.manual_seed(0)
    model = create_model("resnet56", CIFAR, 10)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() > 20_000:
            fan_in = m.weight[0].numel()
            expected = (2.0 / fan_in) ** 0.5
            assert abs(m.weight.std().item() / expected - 1) < 0.1, name
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))


def test_bias_conventions() -> None:
    resnet = create_model("resnet20", CIFAR, 10)
    assert all(m.bias is None for m in resnet.modules() if isinstance(m, nn.Conv2d))
    vgg = create_model("vgg11_bn", CIFAR, 10)
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and all(m.bias is not None for m in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg.modules()) == 4
    assert sum(isinstance(m, nn.Conv2d) for m in create_model("vgg16_bn", CIFAR, 10).modules()) == 13


def _conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k


def test_resnet20_parameter_count_matches_hand_count() -> None:
    w, classes, n = 16, 10, 3
    bn = lambda c: 2 * c  # noqa: E731  (gamma, beta)
    total = _conv(3, w, 3) + bn(w)
    c_in = w
    for stage in range(3):
        c_out = w * 2**stage
        for i in range(n):
            total += _conv(c_in, c_out, 3) + bn(c_out) + _conv(c_out, c_out, 3) + bn(c_out)
            if c_in != c_out:
                total += _conv(c_in, c_out, 1) + bn(c_out)
            c_in = c_out
    total += c_in * classes + classes
    model = create_model("resnet20", CIFAR, classes)
    assert sum(p.numel() for p in model.parameters()) == total
    assert 0.26e6 < total < 0.28e6
    shortcuts = [m for name, m in model.named_modules() if name.endswith("shortcut.0")]
    assert [tuple(s.weight.shape) for s in shortcuts] == [(32, 16, 1, 1), (64, 32, 1, 1)]
    assert len([m for m in model.modules() if isinstance(m, nn.Conv2d)]) == 21


def test_convnet_pools_only_while_spatial_size_allows() -> None:
    def pools(shape: tuple[int, ...], depth: int) -> int:
        model = create_model("convnet", shape, 10, depth=depth, width=8)
        return sum(isinstance(m, nn.AvgPool2d) for m in model.modules())

    assert pools(DIGITS, 3) == 3
    assert pools(DIGITS, 5) == 3
    assert pools(CIFAR, 3) == 3
    model = create_model("convnet", CIFAR, 10, width=16)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 3 and all(g.num_groups == g.num_channels == 16 and g.affine for g in norms)
    assert model.fc.in_features == 16 * 4 * 4
    batch = create_model("convnet", CIFAR, 10, width=16, norm="batch")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in batch.modules()) == 3
    plain = create_model("convnet", DIGITS, 10, width=16, norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in plain.modules())


def test_mlp_is_lenet_300_100_by_default() -> None:
    model = create_model("mlp", (1, 28, 28), 10)
    shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(300, 784), (100, 300), (10, 100)]


def test_vgg_rejects_too_small_input() -> None:
    assert create_model("vgg16_bn", (3, 16, 16), 10)(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    with pytest.raises(ValueError, match="too small"):
        create_model("vgg16_bn", (3, 8, 8), 10)


@pytest.mark.parametrize("shape", [CIFAR, (1, 28, 28), (4, 32, 32)], ids=str)
def test_torchvision_resnet18(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = create_model("tv:resnet18", shape, 10)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 10)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(not m.inplace for m in relus)


def test_torchvision_names_and_rejections() -> None:
    assert "resnet18" in torchvision_model_names()
    assert ModelConfig(name="tv:resnet18").options == {"kwargs": {}}
    with pytest.raises(pydantic.ValidationError, match="allowed after 'tv:'.*resnet18"):
        ModelConfig(name="tv:not_a_model")
    with pytest.raises(pydantic.ValidationError, match="weights"):
        ModelConfig(name="tv:resnet18", options={"kwargs": {"weights": "DEFAULT"}})


def test_model_config_rejects_unknown_name() -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        ModelConfig(name="resnet21")
    message = str(err.value)
    assert all(n in message for n in model_names())
    assert "tv:" in message


def test_model_config_rejects_unknown_option_key() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"options\.widht"):
        ModelConfig(name="convnet", options={"widht": 64})


@pytest.mark.parametrize(("name", "options", "key"), [
    ("convnet", {"width": 0}, "width"),
    ("resnet20", {"width": -1}, "width"),
    ("convnet", {"norm": "layer"}, "norm"),
    ("mlp", {"widths": [300, 0]}, "widths.1"),
    ("conv1d", {"depth": 0}, "depth"),
])
def test_model_config_rejects_bad_values(name: str, options: dict, key: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=rf"options\.{key}"):
        ModelConfig(name=name, options=options)


def test_model_config_fills_defaults_and_round_trips() -> None:
    cfg = ModelConfig(name="convnet", options={"width": 32})
    assert cfg.options == {"depth": 3, "width": 32, "norm": "instance"}
    assert ModelConfig.model_validate(cfg.model_dump()) == cfg
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(name="convnet", extra_field=1)
    model = create_model(cfg, CIFAR, 10, depth=2)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 2
    assert model.fc.in_features == 32 * 8 * 8


def test_create_model_checks_input_shape() -> None:
    with pytest.raises(ValueError, match="conv1d"):
        create_model("conv1d", CIFAR, 10)
    with pytest.raises(ValueError, match="resnet20"):
        create_model("resnet20", MNIST1D, 10)


def test_conv_and_linear_biases_start_at_zero() -> None:
    """Synaptic-Flow's init: SynFlow abs()es biases, so non-zero ones would add flow at init."""
    for name, shape in (("mlp", (1, 8, 8)), ("convnet", (3, 16, 16)), ("vgg11_bn", (3, 32, 32)), ("conv1d", (1, 40))):
        model = create_model(name, shape, 10)
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and m.bias is not None:
                assert torch.count_nonzero(m.bias) == 0, (name, m)


def test_vit_projections_are_separate_prunable_linears_and_patches_must_fit():
    model = create_model("vit", DIGITS, 10, patch_size=2, dim=16, heads=4, depth=2, mlp_ratio=2.0)
    from pruning.mask import prunable_parameters

    names = list(prunable_parameters(model))
    assert names[0] == "patch.weight" and names[-1] == "fc.weight"
    per_block = [n for n in names if n.startswith("blocks.0.")]
    assert per_block == [f"blocks.0.attn.{p}.weight" for p in "qkv"] + ["blocks.0.attn.proj.weight",
                                                                      "blocks.0.mlp.0.weight", "blocks.0.mlp.2.weight"]
    assert model.blocks[0].mlp[0].out_features == 32
    with pytest.raises(ValueError, match="patch_size 3 must divide the input size 8x8"):
        create_model("vit", DIGITS, 10, patch_size=3)
    with pytest.raises(pydantic.ValidationError, match="multiple of heads"):
        create_model("vit", DIGITS, 10, dim=10, heads=4)
