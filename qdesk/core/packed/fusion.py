"""One kernel call for the Linears that read the same input (q/k/v, gate/up).

A decoder layer multiplies one hidden state by q_proj, k_proj and v_proj, and
another by gate_proj and up_proj. On qdesk's CPU kernel each call costs a
fixed few microseconds (Python, ctypes, a thread team) and a small layer
(the demo's k_proj: 576 x 192) is too small to share between threads; stacked
into one weight the three are one call over 960 rows. ``fuse_siblings`` stacks
the weights of such a set (same width, code width, group, scale dtype, zero
points or none) into one ``NativeCodes`` and gives each member a ``run`` that
takes its rows of the stacked product. The first member called with an input
computes the product for all of them; the others, called with that very tensor
(the same object, unchanged since), take their rows; any other input (a model
that feeds them differently) computes the stacked product again, so the
result is always right, only slower. The members' own weights are dropped: the
stacked ones are the only copy (``RowsOf`` gives each member its rows back).

A decoder MLP whose forward is exactly transformers' Llama one,
``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` (read from its source, so every
model that copies it qualifies and a changed one does not), and whose gate/up
are stacked, gets a forward of its own: the stacked product, the activation
times the up half, down_proj. Each element is computed by the same operations
as before (bit for bit); what goes is the members' calls and the split. On the
demo (4-bit g64, 2-core AVX2 CPU, 11 rounds, paired) decode tokens/s rose
1.040x (exact) and 1.025x (int8 activations) over the stacked members alone.
While gate_proj or up_proj has hooks (which the fused forward would skip), the
model's own forward runs.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import threading

import torch
from torch import nn
from torch.nn.modules import module as _module_hooks

from qdesk.core.packed.native_kernels import NativeCodes

# Sets of sibling Linears that a decoder layer applies to one input, by name.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class _Stacked:
    """The stacked product of one input, handed out part by part. Each thread
    keeps its own (a scorer may step the same model in its own thread)."""

    def __init__(self, impl: NativeCodes, sizes: list[int]) -> None:
        self.impl, self.sizes = impl, sizes
        self.local = threading.local()

    def part(self, i: int, x: torch.Tensor) -> torch.Tensor:
        state = self.local
        key = (x, _version(x))
        parts = getattr(state, "parts", None)
        if parts is None or state.key[0] is not x or state.key[1] != key[1] or parts[i] is None:
            y = self.impl.run(x)
            parts = list(y.split(self.sizes, dim=-1))
            if y.numel() != y.shape[-1]:  # several rows: a part's rows are strided
                parts = [p.contiguous() for p in parts]
            state.parts, state.key = parts, key
        out, parts[i] = parts[i], None
        if all(p is None for p in parts):
            state.parts = state.key = None  # hold no tensor past the last member
        return out


def _version(x: torch.Tensor) -> int:
    """The tensor's in-place change counter; inference tensors keep none (inside
    inference mode nothing between the members' calls changes their input)."""
    return -1 if x.is_inference() else x._version


def _stackable(layers: list) -> bool:
    impls = [getattr(layer, "impl", None) for layer in layers]
    if not all(isinstance(i, NativeCodes) for i in impls):
        return False
    first = impls[0]
    return all(
        i.in_features == first.in_features and i.code_bits == first.code_bits
        and i.group == first.group and i.offset == first.offset
        and i.scale.dtype == first.scale.dtype
        and (i.zero is None) == (first.zero is None) and not layer.has_bias
        for i, layer in zip(impls, layers)
    )


def _stack(impls: list[NativeCodes]) -> NativeCodes:
    fused = NativeCodes.__new__(NativeCodes)
    nn.Module.__init__(fused)
    first = impls[0]
    for attr in ("lib", "in_features", "group", "code_bits", "offset", "_gemm"):
        setattr(fused, attr, getattr(first, attr))
    fused.out_features = sum(i.out_features for i in impls)
    fused.register_buffer("codes", torch.cat([i.codes for i in impls]))
    fused.register_buffer("scale", torch.cat([i.scale for i in impls]))
    fused.register_buffer("zero", None if first.zero is None
                          else torch.cat([i.zero for i in impls]))
    fused._bind()
    return fused


def fuse_siblings(model: nn.Module) -> int:
    """Stack every sibling set (``SIBLINGS``) whose members all run on qdesk's CPU
    kernel in a compatible format. Returns how many sets were stacked."""
    count = 0
    for parent in list(model.modules()):
        for names in SIBLINGS:
            layers = [getattr(parent, n, None) for n in names]
            if any(layer is None for layer in layers) or not _stackable(layers):
                continue
            impls = [layer.impl for layer in layers]
            stacked = _Stacked(_stack(impls), [i.out_features for i in impls])
            start = 0
            for index, (layer, impl) in enumerate(zip(layers, impls)):
                layer.impl = RowsOf(stacked.impl, start, start + impl.out_features)
                layer.run = _member_run(stacked, index)
                start += impl.out_features
            if names == ("gate_proj", "up_proj") and _is_gated_mlp(type(parent)):
                parent.forward = _gated_forward(parent, stacked)
            count += 1
    return count


# The Llama MLP's forward body, in ast.unparse's spelling (two ways of writing it).
_GATED_BODIES = (
    "down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))\n"
    "return down_proj",
    "return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))",
)


@functools.cache
def _is_gated_mlp(cls: type) -> bool:
    """Whether ``cls.forward`` is the Llama MLP's, ``forward(self, x)`` with the
    body above (source unavailable or anything else: no)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls.forward)))
    except (OSError, TypeError, SyntaxError):
        return False
    fn = tree.body[0] if tree.body else None
    if not isinstance(fn, ast.FunctionDef) or fn.decorator_list:
        return False
    args = fn.args
    if [a.arg for a in args.args] != ["self", "x"] or args.vararg or args.kwarg or args.kwonlyargs:
        return False
    return "\n".join(ast.unparse(stmt) for stmt in fn.body) in _GATED_BODIES


def _gated_forward(mlp: nn.Module, stacked: _Stacked):
    gate, up, down, act = mlp.gate_proj, mlp.up_proj, mlp.down_proj, mlp.act_fn
    impl, n_gate = stacked.impl, stacked.sizes[0]
    own = type(mlp).forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if (gate._forward_pre_hooks or gate._forward_hooks or up._forward_pre_hooks
                or up._forward_hooks or _module_hooks._global_forward_pre_hooks
                or _module_hooks._global_forward_hooks):
            return own(mlp, x)
        y = impl.run(x)
        return down(act(y[..., :n_gate]) * y[..., n_gate:])

    return forward


class RowsOf(nn.Module):
    """A member's view of the stacked weight: rows ``start:stop`` of ``source``
    (one module shared by the set, so its buffers count once)."""

    name = "native"
    stacked = True

    def __init__(self, source: NativeCodes, start: int, stop: int) -> None:
        super().__init__()
        self.source, self.start, self.stop = source, start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.source.run(x)[..., self.start:self.stop]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.source.dequantize(dtype)[self.start:self.stop].clone()


def stacked_source(*layers: nn.Module) -> NativeCodes | None:
    """The stacked weight behind ``layers`` where they are exactly its members in
    order (one ``run`` then gives all their products side by side, as the
    members would take their rows of it); else None."""
    impls = [getattr(layer, "impl", None) for layer in layers]
    if not all(isinstance(i, RowsOf) for i in impls) or any(layer.has_bias for layer in layers):
        return None
    source = impls[0].source
    start = 0
    for impl in impls:
        if impl.source is not source or impl.start != start:
            return None
        start = impl.stop
    return source if start == source.out_features else None


def _member_run(stacked: _Stacked, index: int):
    def run(x: torch.Tensor) -> torch.Tensor:
        return stacked.part(index, x)

    return run
