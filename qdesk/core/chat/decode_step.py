"""One decode step of a Llama-family model, without transformers' model forward.

A chat pane spends most of its life feeding one token at a time. For that
step transformers' ``model(...)`` does far more than the arithmetic: keyword
plumbing and decorators on every layer, a causal mask that comes out empty,
output records, and a ``Module.__call__`` for each of ~12 modules a layer
(measured on the demo, 2-core AVX2 CPU: about half of a packed 4-bit step
outside the products and the head). ``DecodeStep`` runs the same
modules' ``forward`` functions on the same tensors in the model's own order:
embedding, rotary angles, per layer norm, q/k/v (one product where they are
stacked), the rotation (q and k at once), ``cache.update``, the model's
registered attention function, o_proj, residual, norm, MLP, residual; the
final norm and the head. Every element comes out of the same elementwise
operations and products, so the logits are bit for bit the forward's (the
tests compare them with ``torch.equal`` per family, dense and packed), and the
KV cache is transformers' own ``DynamicCache``: crops, forks and ``HFBatch``
see nothing different. Measured (``benchmarks/bench_speed.py``, demo, 64
tokens, statistics on, 9 rounds, two runs): 1.12-1.15x transformers' forward
for the dense bfloat16 model, 1.36-1.38x for the 4-bit packed one.

It takes only what it was read against: a ``LlamaForCausalLM``,
``MistralForCausalLM``, ``Qwen2ForCausalLM`` or ``Qwen3ForCausalLM`` (per-head
q/k norms) with full attention in every layer, sdpa attention, no dropout in
use. Everything else, and any step while a hook is registered on a module the
step passes (a quantization's activation capture, a user's), goes through the
model's forward. Because transformers changes between versions (qdesk pins
only a minimum), the first step of each model runs both ways and compares the
logits; any difference turns the step off for that model, with a log line.
``QDESK_DECODE_STEP=transformers`` turns it off for the whole process.
"""

from __future__ import annotations

import logging
import os
import weakref

import torch
from torch import nn
from torch.nn.modules import module as _module_hooks

from qdesk.core.packed.fusion import stacked_source

log = logging.getLogger(__name__)

# The causal-LM classes whose decode step this file reproduces.
_CLASSES = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}

_steps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_switched_off: weakref.WeakSet = weakref.WeakSet()


def decode_step_for(model: nn.Module) -> DecodeStep | None:
    """The model's ``DecodeStep``, or None where its forward must run (one per
    model, shared by every backend forked from it)."""
    if model in _switched_off:
        return None
    if model not in _steps:
        _steps[model] = DecodeStep(model) if _supported(model) else None
    return _steps[model]


def use_decode_step(model: nn.Module, on: bool) -> None:
    """Let ``model`` decode through qdesk's step (the default where it applies)
    or always through its forward (benchmarks and tests compare the two)."""
    if on:
        _switched_off.discard(model)
    else:
        _switched_off.add(model)


def _supported(model: nn.Module) -> bool:
    if os.environ.get("QDESK_DECODE_STEP", "").strip().lower() == "transformers":
        return False
    config = getattr(model, "config", None)
    if type(model).__name__ not in _CLASSES or config is None or model.training:
        return False
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(config, "sliding_window", None) is not None and getattr(
            config, "use_sliding_window", True):
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return False
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    return layers is not None and len(layers) == config.num_hidden_layers and all(
        hasattr(layer, name) for layer in layers
        for name in ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm"))


class DecodeStep:
    """Feed one token to a model with a KV cache; the logits of the next."""

    def __init__(self, model: nn.Module) -> None:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        # A weak reference: the steps are kept in a WeakKeyDictionary keyed by the
        # model, and a value holding its key would keep every closed model alive.
        self._model = weakref.ref(model)
        self.attention = ALL_ATTENTION_FUNCTIONS[model.config._attn_implementation]
        self.verified = False
        self._plan, self._plan_generation = None, -1

    @property
    def model(self) -> nn.Module:
        return self._model()

    def usable(self) -> bool:
        """False while the forward must run: in training mode, or while a hook is
        registered on a module whose ``forward`` the step calls directly (the
        embedding, the rotary module and the MLPs' members are called as
        modules, so their hooks run either way)."""
        if (self.model.training or _module_hooks._global_forward_hooks
                or _module_hooks._global_forward_pre_hooks):
            return False
        return not any(hooks for hooks in self._current_plan().hooks)

    def _current_plan(self) -> _Plan:
        """The modules the step calls, read again whenever a submodule was set
        anywhere since (a quantization packing a layer, a kernel swapped in)."""
        if self._plan_generation != _registrations.count:
            generation = _registrations.count
            self._plan = _Plan(self.model)
            self._plan_generation = generation
        return self._plan

    def __call__(self, token: int, cache) -> torch.Tensor:
        """Logits (1, 1, vocab) after ``token``; appends to ``cache`` as the model's
        forward would. The first call also runs the forward and compares."""
        if self.verified:
            return self._step(token, cache)
        from qdesk.core.chat.hf_backend import CACHE_ARG

        mine = self._step(token, cache)
        cache.crop(-1)
        ids = torch.tensor([[token]], dtype=torch.long, device=mine.device)
        theirs = self.model(input_ids=ids, **{CACHE_ARG: cache}, use_cache=True,
                            logits_to_keep=1).logits
        # exactly equal, NaN where the forward has NaN (a broken model is broken both ways)
        if torch.allclose(mine, theirs, rtol=0, atol=0, equal_nan=True):
            self.verified = True
        else:
            log.warning("qdesk's decode step differs from %s's forward (max |diff| %.3g): "
                        "using the forward", type(self.model).__name__,
                        (mine.float() - theirs.float()).abs().max().item())
            _steps[self.model] = None
        return theirs

    def _step(self, token: int, cache) -> torch.Tensor:
        plan = self._current_plan()
        position = cache.get_seq_length()
        ids = torch.tensor([[token]], dtype=torch.long, device=plan.device)
        hidden = plan.embed(ids)
        cos, sin = plan.rotary(hidden, torch.tensor([[position]], device=plan.device))
        # The rotation of q and k as apply_rotary_pos_emb computes it,
        # x * cos + rotate_half(x) * sin, in four operations for both at once:
        # rotate_half(x) * sin is x with its halves swapped times sin with its
        # first half negated (a sign moves between exact factors: bit for bit).
        half = cos.shape[-1] // 2
        cos = cos.unsqueeze(2)  # (1, 1, 1, head_dim): over the heads of (1, 1, heads, head_dim)
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1).unsqueeze(2)
        attention = self.attention
        for index, layer in enumerate(plan.layers):
            x = layer.in_norm(hidden)
            if layer.qkv is not None:  # one product; q and k side by side in it
                y = layer.qkv.run(x)
                qk, v = y[..., :layer.qk_width], y[..., layer.qk_width:]
                q, k = qk[..., :layer.q_width], qk[..., layer.q_width:]
            else:
                q, k, v = layer.q(x), layer.k(x), layer.v(x)
                qk = None
            if layer.q_norm is not None:
                qk = torch.cat((layer.q_norm(q.view(layer.heads)),
                                layer.k_norm(k.view(layer.heads))), dim=2)
            elif qk is None:
                qk = torch.cat((q, k), dim=-1).view(layer.heads)
            else:
                qk = qk.view(layer.heads)
            swapped = qk.view(*qk.shape[:-1], 2, half).flip(-2).view(qk.shape)
            qk = qk * cos + swapped * sin
            n_q = layer.q_heads
            q, k = qk[:, :, :n_q].transpose(1, 2), qk[:, :, n_q:].transpose(1, 2)
            k, v = cache.update(k, v.view(layer.heads).transpose(1, 2), index)
            out, _ = attention(layer.attn, q, k, v, None, dropout=0.0, scaling=layer.attn.scaling)
            hidden = hidden + layer.o(out.reshape(1, 1, -1).contiguous())
            hidden = hidden + layer.mlp(layer.post_norm(hidden))
        return plan.head(plan.norm(hidden))


class _Plan:
    """The bound ``forward`` functions of one model's modules, as the step calls them,
    and the hook tables of every module called that way."""

    def __init__(self, model: nn.Module) -> None:
        inner = model.model
        self.embed, self.rotary = inner.embed_tokens, inner.rotary_emb  # called as modules
        self.device = inner.embed_tokens.weight.device
        self.norm, self.head = inner.norm.forward, model.lm_head.forward
        direct = [model, inner, inner.norm, model.lm_head]
        self.layers = []
        for layer in inner.layers:
            self.layers.append(_Layer(layer))
            attn = layer.self_attn
            direct += [layer, attn, layer.input_layernorm, attn.q_proj, attn.k_proj, attn.v_proj,
                       attn.o_proj, layer.post_attention_layernorm, layer.mlp]
            if getattr(attn, "q_norm", None) is not None:
                direct += [attn.q_norm, attn.k_norm]
        self.hooks = [d for m in direct for d in (m._forward_hooks, m._forward_pre_hooks)]


class _Layer:
    def __init__(self, layer: nn.Module) -> None:
        attn = self.attn = layer.self_attn
        self.heads = (1, 1, -1, attn.head_dim)
        self.in_norm = layer.input_layernorm.forward
        self.post_norm = layer.post_attention_layernorm.forward
        self.q, self.k, self.v = attn.q_proj.forward, attn.k_proj.forward, attn.v_proj.forward
        self.o, self.mlp = attn.o_proj.forward, layer.mlp.forward
        q_norm = getattr(attn, "q_norm", None)
        self.q_norm = q_norm.forward if q_norm is not None else None
        self.k_norm = attn.k_norm.forward if q_norm is not None else None
        # q/k/v stacked into one weight (packed/fusion.py): one product, split here
        # as the members would take their rows of it.
        self.qkv = stacked_source(attn.q_proj, attn.k_proj, attn.v_proj)
        self.q_width = attn.q_proj.out_features
        self.qk_width = self.q_width + attn.k_proj.out_features
        self.q_heads = self.q_width // attn.head_dim


class _Registrations:
    """How many submodules were set anywhere in the process (torch's global
    registration hook): a cheap sign that a plan may be stale."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, _module, _name, _submodule) -> None:
        self.count += 1


_registrations = _Registrations()
_module_hooks.register_module_module_registration_hook(_registrations)
