"""PX, Path eXclusion (Iurada, Ciccone, Tommasi, CVPR 2024): a data-dependent bound on the NTK trace.

A ReLU network is a sum over input-output paths, f_k(x) = sum_{p->k} a_p(x) x_in(p) v_p(theta), with a_p the
0/1 "every unit on the path is active" gate and v_p the product of the weights on the path. Cauchy-Schwarz
over the paths through a weight theta_j gives (df_k/dtheta_j)^2 <= z1_k(x) * dz2_k/d(theta_j^2) with

* z1_k(x) = sum_{p->k} a_p(x) x_in(p)^2: the net with every weight set to 1 (pruned weights 0) and every
  gate copied from the real net on x, fed x^2, no gradient;
* z2_k(theta^2) = sum_{p->k} v_p^2: the net with every weight squared and no ReLU gating, fed ones.

R = sum_x sum_k z1_k(x) z2_k(theta^2) and the score is theta^2 * dR/d(theta^2) (keep the highest).

ReLU gating sees every ReLU however it is applied (an ``nn.ReLU`` module, ``F.relu``, ``torch.relu``,
``x.relu()``, in place or not): during PX's own passes, and only then, a torch function mode
(``_ReluGates``) intercepts those calls; no torch function is patched. The real net runs first and
records each ReLU's gate in call order; the z1 copy, running the same forward code, replays them in the
same order; z2 applies no gate. A model that applies an activation PX has no path decomposition for
(GELU, SiLU, LeakyReLU, ReLU6, sigmoid, tanh, ...) is refused with its name: scoring it as if the
activation were linear would be silently wrong. Max-pooling and normalisation layers are handled with
forward hooks on their modules, matched by name, first-in first-out (a module called several times per
forward, as in torchvision ResNets, replays in call order).

``variant="clean"`` (default): the maths above, extended to every layer our models have, always through the
exact path decomposition of the *real* network at x, so the bound on the real net's NTK trace still holds.

* Real net: eval mode (BatchNorm uses running statistics), original weights.
* Biases: a bias is a weight on an edge from an always-on unit, so bias paths are paths like any other:
  z1 sets the bias to 1 (its "input" squared is 1), z2 to b^2. A bias that is exactly 0 (e.g. BatchNorm's
  shift at init) carries no path and is 0 in z1 as well (removing zero-valued paths from both factors keeps
  the bound valid and tighter). The reference code also sets biases to 1 / squares them. Zeroing biases in
  both copies would instead bound a different, bias-free network than the one whose gates we copy.
* Normalisation layers: linearised at the real net, y = s*h + t per channel (BatchNorm in eval mode:
  s = gamma/sqrt(running_var+eps), t = beta - s*running_mean, i.e. BN folded into the preceding layer).
  s is a per-channel weight on every path through the channel and t a bias: z1 uses 1[s != 0], 1[t != 0];
  z2 uses s^2, t^2. Norms whose statistics depend on the example (GroupNorm, InstanceNorm, LayerNorm, BN
  without running statistics) use the real net's statistics on that example; the path decomposition then
  ignores how the statistics depend on theta (a linearisation, not an exact bound).
* Max-pooling is a gate too: the real net routes each window through its argmax. Both copies pick exactly
  the positions the real net picked (indices from the real activations, then a gather, which is linear), so
  z1 follows the real net's routing and z2 sums v_p^2 over the paths the real net can use at x. Keeping
  this 0/1 gate in both Cauchy-Schwarz factors is valid since g^2 = g, and tighter than a sum over the whole
  window; the price is that z2 then depends on x, so it is evaluated per example. Average pooling is
  linear with a constant weight 1/n; running it unchanged in both copies splits that constant evenly
  between the two factors, which is again an exact Cauchy-Schwarz split.
* When z2 does not depend on x (no max-pool, no per-example norm), z2 is computed once on a single all-ones
  input and R = sum_k (sum_x z1_k(x)) z2_k: the same number at a fraction of the cost.

``variant="official"`` reproduces the reference code (iurada/px-ntk-pruning, ``lib/pruners.py::PX.score``):
the real net runs in eval mode, both copies in *train* mode (BatchNorm on batch statistics, z2's batch
being identical all-ones images); every parameter and floating buffer whose name contains "bn" or "fc"
keeps its original (signed) value in both copies, every other one is squared in z2 and set to 1 in z1
(pruned weights stay 0); max-pools are left as plain max-pools in both copies (the reference patches only
F.relu); the score is theta^2 * abs(grad).
"""
from __future__ import annotations

import copy
from collections import defaultdict, deque
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.overrides import TorchFunctionMode


VARIANTS = ("clean", "official")
OFFICIAL_SKIP = ("bn", "fc")  # name fragments the reference code leaves unsquared / not set to 1

_MAX_POOLS: dict[type, tuple[int, Callable]] = {
    nn.MaxPool1d: (1, F.max_pool1d),
    nn.MaxPool2d: (2, F.max_pool2d),
    nn.MaxPool3d: (3, F.max_pool3d),
}
_ADAPTIVE_MAX_POOLS: dict[type, tuple[int, Callable]] = {
    nn.AdaptiveMaxPool1d: (1, F.adaptive_max_pool1d),
    nn.AdaptiveMaxPool2d: (2, F.adaptive_max_pool2d),
    nn.AdaptiveMaxPool3d: (3, F.adaptive_max_pool3d),
}
_NORMS = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)

_RELUS = {F.relu: False, F.relu_: True, torch.relu: False, torch.relu_: True,
          torch.Tensor.relu: False, torch.Tensor.relu_: True}  # -> in place
# Activations with no 0/1 path gate: PX has no decomposition for them, so it refuses rather than guess.
_UNGATEABLE = {
    F.gelu: "GELU", F.silu: "SiLU", F.leaky_relu: "LeakyReLU", F.leaky_relu_: "LeakyReLU", F.relu6: "ReLU6",
    F.hardtanh: "Hardtanh", F.hardtanh_: "Hardtanh", F.elu: "ELU", F.elu_: "ELU", F.selu: "SELU",
    F.celu: "CELU", F.softplus: "Softplus", F.hardswish: "Hardswish", F.hardsigmoid: "Hardsigmoid",
    F.mish: "Mish", F.prelu: "PReLU", F.rrelu: "RReLU", F.glu: "GLU", F.logsigmoid: "LogSigmoid",
    F.tanhshrink: "Tanhshrink", F.softsign: "Softsign", torch.sigmoid: "sigmoid", torch.tanh: "tanh",
    torch.Tensor.sigmoid: "sigmoid", torch.Tensor.tanh: "tanh", torch.sigmoid_: "sigmoid", torch.tanh_: "tanh",
}


# --------------------------------------------------------------------------------------------- helpers
def _is_max_pool(m: nn.Module) -> bool:
    return type(m) in _MAX_POOLS or type(m) in _ADAPTIVE_MAX_POOLS


def _pool_indices(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Flat (per channel) indices of the positions the max-pool ``m`` picks on ``x``."""
    if type(m) in _MAX_POOLS:
        _, fn = _MAX_POOLS[type(m)]
        _, idx = fn(x, m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode,
                    return_indices=True)
    else:
        _, fn = _ADAPTIVE_MAX_POOLS[type(m)]
        _, idx = fn(x, m.output_size, return_indices=True)
    return idx


def _pool_dims(m: nn.Module) -> int:
    return (_MAX_POOLS.get(type(m)) or _ADAPTIVE_MAX_POOLS[type(m)])[0]


def _gather(x: torch.Tensor, idx: torch.Tensor, dims: int) -> torch.Tensor:
    """The linear map 'take the values at these positions': max-pooling with a fixed routing."""
    flat = x.flatten(start_dim=x.dim() - dims)
    return flat.gather(-1, idx.flatten(start_dim=idx.dim() - dims)).view(idx.shape)


def _is_static_norm(m: nn.Module) -> bool:
    """True if the layer is one fixed affine map (BN/IN in eval mode with running statistics)."""
    return isinstance(m, (_BatchNorm, _InstanceNorm)) and not m.training and m.running_mean is not None


def _norm_affine(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t), broadcastable to ``x``, with ``m(x) == s * x + t`` at the statistics ``m`` uses on ``x``."""
    if isinstance(m, nn.LayerNorm):
        dims = tuple(range(x.dim() - len(m.normalized_shape), x.dim()))
        mean = x.mean(dims, keepdim=True)
        rstd = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + m.eps)
        gamma = m.weight if m.weight is not None else 1.0
        beta = m.bias if m.bias is not None else 0.0
        s = gamma * rstd
        return s, beta - s * mean
    trail = (1,) * (x.dim() - 2)
    c = x.shape[1]
    if isinstance(m, nn.GroupNorm):
        n = x.shape[0]
        grouped = x.reshape(n, m.num_groups, -1)
        mean = grouped.mean(-1).repeat_interleave(c // m.num_groups, dim=1)
        var = grouped.var(-1, unbiased=False).repeat_interleave(c // m.num_groups, dim=1)
        shape = (n, c, *trail)
    elif _is_static_norm(m):
        mean, var = m.running_mean, m.running_var
        shape = (1, c, *trail)
    elif isinstance(m, _BatchNorm):
        dims = (0, *range(2, x.dim()))
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        shape = (1, c, *trail)
    else:  # instance norm on its own statistics
        dims = tuple(range(2, x.dim()))
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        shape = (x.shape[0], c, *trail)
    s = torch.rsqrt(var + m.eps)
    if m.weight is not None:  # affine
        s = s * m.weight
    t = -s * mean
    if m.bias is not None:
        t = t + m.bias
    return s.reshape(shape), t.reshape(shape)


class _Tape:
    """What the real net did, per consumer pass and module name, replayed first-in first-out."""

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str], deque] = defaultdict(deque)

    def push(self, name: str, value: object, consumers: tuple[str, ...]) -> None:
        for c in consumers:
            self.queues[(c, name)].append(value)

    def pop(self, consumer: str, name: str) -> object:
        queue = self.queues.get((consumer, name))
        if not queue:
            raise RuntimeError(
                f"PX: {name!r} ran more often in the {consumer} pass than in the real net; "
                "the gating replay needs the same modules and activations to run in the same order"
            )
        return queue.popleft()

    def finish(self) -> None:
        left = sorted({f"{c}:{n}" for (c, n), q in self.queues.items() if q})
        self.queues.clear()
        if left:
            raise RuntimeError(f"PX: recorded activations were never replayed ({left}); "
                               "the copies did not run the modules the real net ran")


class _ReluGates(TorchFunctionMode):
    """Within one PX pass, every ReLU call: recorded ("real": its 0/1 gate, then the real ReLU), replayed
    ("z1": the input times the recorded gate) or skipped ("z2": the input, ungated)."""

    def __init__(self, tape: _Tape, role: str) -> None:
        super().__init__()
        self.tape, self.role = tape, role

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELUS:
            x = args[0]
            inplace = _RELUS[func] or bool(kwargs.get("inplace") or (len(args) > 1 and args[1] is True))
            if self.role == "real":
                self.tape.push("relu", x > 0, ("z1",))
                return func(*args, **kwargs)
            if self.role == "z1":
                gate = self.tape.pop("z1", "relu").to(x.dtype)
                return x.mul_(gate) if inplace else x * gate
            return x
        if func in _UNGATEABLE:
            raise ValueError(f"PX cannot score this model: it applies {_UNGATEABLE[func]}, which has no 0/1 path "
                             "gate (PX's path decomposition needs ReLU activations); use another method")
        return func(*args, **kwargs)


# --------------------------------------------------------------------------------------------- scorer
class PXComputation:
    """theta^2 * dR/d(theta^2) with R = sum_x sum_k z1_k(x) z2_k(theta^2) (see the module docstring).

    The machinery behind the ``px`` method (``pruning/scorers/px.py``), which imports it when it scores."""

    def __init__(self, variant: str = "clean") -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown PX variant {variant!r}; allowed: {', '.join(VARIANTS)}")
        self.variant = variant

    @classmethod
    def check_model(cls, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        """One forward with the gating mode watching: an activation PX cannot gate raises by name."""
        tape = _Tape()
        was = model.training
        try:
            model.eval()
            with torch.no_grad(), _ReluGates(tape, "real"):
                model(torch.zeros(1, *input_shape))
        finally:
            model.train(was)

    # ----------------------------------------------------------------------------------- public
    def score(self, model, params, mask, batches):
        clean = self.variant == "clean"
        modes = {m: m.training for m in model.modules()}
        handles: list = []
        try:
            model.eval()
            z1_net, z2_net = self._copies(model, params, mask)
            # z2 depends on x only through max-pool routing or per-example norm statistics.
            per_example = clean and any(
                _is_max_pool(m) or (isinstance(m, _NORMS) and not _is_static_norm(m))
                for m in model.modules()
            )
            tape = _Tape()
            handles += self._hook_real(model, tape, clean, per_example)
            handles += self._hook_copy(z1_net, tape, "z1", clean)
            handles += self._hook_copy(z2_net, tape, "z2", clean)
            z2_params = dict(z2_net.named_parameters())
            targets = [z2_params[n] for n in params]
            for p in targets:
                p.requires_grad_(True)
            ref = targets[0]
            grads = [torch.zeros_like(p) for p in targets]
            z1_total = None
            sample = None
            for x, _ in batches:
                x = x.to(device=ref.device, dtype=ref.dtype)
                sample = x[:1]
                with torch.no_grad():
                    with _ReluGates(tape, "real"):
                        model(x)
                    with _ReluGates(tape, "z1"):
                        z1 = z1_net(x * x)
                if per_example or not clean:
                    with torch.enable_grad(), _ReluGates(tape, "z2"):
                        z2 = z2_net(torch.ones_like(x))
                    with torch.enable_grad():
                        self._accumulate(grads, (z1 * z2).sum(), targets)
                    tape.finish()
                else:
                    tape.finish()
                    z1_total = z1.sum(0) if z1_total is None else z1_total + z1.sum(0)
            if sample is None:
                raise ValueError("PX needs scoring examples, but the batches were empty")
            if z1_total is not None:
                with torch.enable_grad(), _ReluGates(tape, "z2"):
                    z2 = z2_net(torch.ones_like(sample))[0]
                with torch.enable_grad():
                    self._accumulate(grads, (z1_total * z2).sum(), targets)
            scores = {}
            for (name, p), g in zip(params.items(), grads):
                theta_sq = p.detach().to(torch.float64) ** 2
                g = g.to(torch.float64)
                scores[name] = theta_sq * (g if clean else g.abs())
            return scores
        finally:
            for h in handles:
                h.remove()
            for m, flag in modes.items():
                m.training = flag

    # ----------------------------------------------------------------------------------- copies
    def _copies(self, model: nn.Module, params, mask) -> tuple[nn.Module, nn.Module]:
        """The path-activation copy z1 (weights 1) and the path-kernel copy z2 (weights squared)."""
        z1_net = copy.deepcopy(model)
        z2_net = copy.deepcopy(model)
        for net in (z1_net, z2_net):
            for p in net.parameters():
                p.requires_grad_(False)
            for m in net.modules():
                if isinstance(m, nn.ReLU):
                    m.inplace = False  # the copies' gated activations must not overwrite their inputs
        with torch.no_grad():
            if self.variant == "clean":
                z1_net.eval()
                z2_net.eval()
                norm_params = {id(p) for m in model.modules() if isinstance(m, _NORMS)
                               for p in m.parameters(recurse=False)}
                orig = dict(model.named_parameters())
                for name, p in z1_net.named_parameters():
                    if id(orig[name]) in norm_params:
                        continue  # norm layers are replaced by their linearisation in a hook
                    keep = mask[name] if name in mask else orig[name] != 0
                    p.copy_(keep.to(device=p.device, dtype=p.dtype))
                for name, p in z2_net.named_parameters():
                    if id(orig[name]) not in norm_params:
                        p.mul_(p)
            else:
                z1_net.train()
                z2_net.train()
                for net, squared in ((z1_net, False), (z2_net, True)):
                    named = list(net.named_parameters()) + list(net.named_buffers())
                    for name, t in named:
                        if not t.is_floating_point() or any(s in name for s in OFFICIAL_SKIP):
                            continue
                        if squared:
                            t.mul_(t)
                        else:
                            t.fill_(1.0)
                z1_params = dict(z1_net.named_parameters())
                for name in params:
                    z1_params[name].mul_(mask[name].to(device=z1_params[name].device,
                                                       dtype=z1_params[name].dtype))
        return z1_net, z2_net

    # ----------------------------------------------------------------------------------- hooks
    @staticmethod
    def _hook_real(model: nn.Module, tape: _Tape, clean: bool, per_example: bool) -> list:
        handles = []
        both = ("z1", "z2") if per_example else ("z1",)
        for name, m in model.named_modules():
            if clean and _is_max_pool(m):
                def record_gate(mod, args, out, name=name):
                    tape.push(name, _pool_indices(mod, args[0]), both)
            elif clean and isinstance(m, _NORMS) and not _is_static_norm(m):
                def record_gate(mod, args, out, name=name):
                    tape.push(name, _norm_affine(mod, args[0]), both)
            else:
                continue
            handles.append(m.register_forward_hook(record_gate))
        return handles

    @staticmethod
    def _hook_copy(net: nn.Module, tape: _Tape, role: str, clean: bool) -> list:
        handles = []
        for name, m in net.named_modules():
            if clean and _is_max_pool(m):
                def replay(mod, args, out, name=name, dims=_pool_dims(m)):
                    return _gather(args[0], tape.pop(role, name), dims)
            elif clean and isinstance(m, _NORMS):
                def replay(mod, args, out, name=name):
                    h = args[0]
                    if _is_static_norm(mod):
                        s, t = _norm_affine(mod, h)
                    else:
                        s, t = tape.pop(role, name)
                    if role == "z1":
                        return h * (s != 0).to(h.dtype) + (t != 0).to(h.dtype)
                    return h * (s * s) + t * t
            else:
                continue
            handles.append(m.register_forward_hook(replay))
        return handles

    @staticmethod
    def _accumulate(grads: list[torch.Tensor], r: torch.Tensor, targets: list[torch.Tensor]) -> None:
        got = torch.autograd.grad(r, targets, allow_unused=True)
        for acc, g in zip(grads, got):
            if g is not None:
                acc.add_(g)
