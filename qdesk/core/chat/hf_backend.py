"""The transformers backend: a causal LM with a growing KV cache.

``HFBatch`` lets several backends over the same weights decode one token each
in a single forward pass: on a CPU a decode step is bound by reading the
weights, so a batch of two costs little more than one (measured 1.07x at 64
cached tokens, 1.25x at 512, 1 thread; ``benchmarks/bench_compare.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

from qdesk.core.chat.backends import TokenCache
from qdesk.core.chat.decode_step import decode_step_for
from qdesk.core.chat.tokenizers import HFChatTokenizer
from qdesk.core.threads import apply_torch_threads, compute_stream  # the free cores

# transformers 5.24 names the KV cache ``cache`` (argument and output field);
# ``past_key_values`` still works there but warns on every forward.
CACHE_ARG = ("cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__
             else "past_key_values")


class HFBackend(TokenCache):
    kind = "hf"

    def __init__(self, model, tokenizer: HFChatTokenizer, name: str, n_ctx: int) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.n_ctx = n_ctx
        self.device = next(model.parameters()).device
        self._cache = None
        self._batch: HFBatch | None = None  # while set, the batch holds this cache

    def _own_cache(self) -> None:
        if self._batch is not None:
            self._batch.leave()

    @torch.inference_mode()
    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        self._own_cache()
        step = decode_step_for(self.model) if len(ids) == 1 and _plain_layers(self._cache) else None
        with compute_stream():
            apply_torch_threads()
            if step is not None and step.usable():  # one token onto a cache: qdesk's step
                logits = step(int(ids[0]), self._cache)
            else:
                out = self.model(
                    input_ids=torch.tensor([list(ids)], dtype=torch.long, device=self.device),
                    **{CACHE_ARG: self._cache},
                    use_cache=True,
                    logits_to_keep=1,  # the output head only for the last position
                )
                self._cache, logits = getattr(out, CACHE_ARG), out.logits
        return logits[0, -1].float().cpu().numpy()

    def _crop(self, n: int) -> None:
        self._own_cache()
        if n == 0 or self._cache is None:
            self._cache = None
            return
        remove = self._cache.get_seq_length() - n
        if remove > 0:
            self._cache.crop(-remove)  # a negative count removes tokens in every version

    @torch.inference_mode()
    def score(self, ids: Sequence[int]) -> np.ndarray:
        self.reset()
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        with compute_stream():
            apply_torch_threads()
            logits = self.model(input_ids=input_ids, use_cache=False).logits[0]
            return logits.float().cpu().numpy()

    def fork(self) -> HFBackend:
        """A second backend over the same weights with its own (empty) KV cache."""
        return HFBackend(self.model, self.tokenizer, self.name, self.n_ctx)

    def copy_cache_from(self, other: HFBackend) -> None:
        """Hold what ``other`` holds, without computing it again (same weights).
        Cache tensors are never written in place (a step concatenates, a crop
        slices), so two caches may share them."""
        if other.model is not self.model:
            raise ValueError("a cache can only be copied between forks of one model")
        self._own_cache()
        other._own_cache()
        self._cache = _cache_of(_layers(other._cache)) if other._cache is not None else None
        self.tokens = list(other.tokens)
        self._prefilled = other._prefilled

    def can_batch_with(self, other) -> bool:
        return (
            isinstance(other, HFBackend) and other.model is self.model
            and self._batchable() and other._batchable()
        )

    def _batchable(self) -> bool:
        return self._batch is not None or _plain_layers(self._cache)

    def close(self) -> None:
        self._own_cache()
        self._cache = None
        self.model = None


def _layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_of(layers) -> DynamicCache:
    return DynamicCache(ddp_cache_data=layers)


def _plain_layers(cache) -> bool:
    """Only full-attention layers line up position by position across rows
    (a sliding-window layer keeps a different span per row)."""
    return cache is not None and all(type(layer) is DynamicLayer for layer in cache.layers)


class HFBatch:
    """Backends over one model stepping together, one token each per forward.

    While joined, the members' KV caches live in one batched cache, the shorter
    rows padded on the left and masked out; ``leave`` hands every member its
    own cache back (any single-backend call on a member does so first).
    """

    def __init__(self, members: Sequence[HFBackend]) -> None:
        if len(members) < 2 or not all(members[0].can_batch_with(m) for m in members[1:]):
            raise ValueError("a batch needs two or more forks of one model, each with a cache")
        for m in members:
            m._own_cache()
        self.members = list(members)
        self.model = members[0].model
        lengths = [len(m.tokens) for m in members]
        if any(m._cache.get_seq_length() != n for m, n in zip(members, lengths)):
            raise ValueError("a member's cache and its token list disagree")
        width = max(lengths)
        self.pads = [width - n for n in lengths]
        per_member = [_layers(m._cache) for m in members]
        self.cache = _cache_of([
            (
                torch.cat([F.pad(k, (0, 0, pad, 0)) for (k, _), pad in zip(rows, self.pads)]),
                torch.cat([F.pad(v, (0, 0, pad, 0)) for (_, v), pad in zip(rows, self.pads)]),
            )
            for rows in zip(*per_member)
        ])
        self.mask = None
        if any(self.pads):
            self.mask = torch.ones(len(members), width, dtype=torch.long, device=members[0].device)
            for row, pad in enumerate(self.pads):
                self.mask[row, :pad] = 0
        for m in members:
            m._cache = None
            m._batch = self

    @torch.inference_mode()
    def step(self, ids: Sequence[int]) -> list[np.ndarray]:
        """Feed one token to every member; each member's next-token logits."""
        if self.members[0]._batch is not self:
            raise RuntimeError("this batch was left; start a new one")
        device = self.members[0].device
        width = self.cache.get_seq_length()
        positions = torch.tensor([[width - pad] for pad in self.pads], device=device)
        if self.mask is not None:
            self.mask = F.pad(self.mask, (0, 1), value=1)
        with compute_stream():
            apply_torch_threads()
            out = self.model(
                input_ids=torch.tensor([[int(i)] for i in ids], dtype=torch.long, device=device),
                attention_mask=self.mask,
                position_ids=positions,
                **{CACHE_ARG: self.cache},
                use_cache=True,
                logits_to_keep=1,
            )
        self.cache = getattr(out, CACHE_ARG)
        for m, i in zip(self.members, ids):
            m.tokens.append(int(i))
        logits = out.logits[:, -1].float().cpu().numpy()
        return [logits[row] for row in range(len(self.members))]

    def leave(self) -> None:
        """Give every member its own cache (views of the batch: no copy)."""
        if self.members[0]._batch is not self:
            return
        layers = _layers(self.cache)
        for row, (m, pad) in enumerate(zip(self.members, self.pads)):
            m._cache = _cache_of([(k[row : row + 1, :, pad:], v[row : row + 1, :, pad:])
                                  for k, v in layers])
            m._batch = None
        self.cache = None
