"""A transformers backend with a static KV cache, its one-token step compiled.

``HFBackend`` grows a ``DynamicCache`` (new tensors every token: nothing a CUDA
graph can replay). This backend preallocates the cache for ``max_len`` tokens
(transformers' ``StaticCache``), writes each step at ``cache_position``, and on
CUDA runs the one-token step through ``torch.compile(mode="reduce-overhead")``,
which records it into CUDA graphs (static shapes: one token, one position), so
a decode step is one graph replay instead of hundreds of kernel launches from
Python. Prefill (many tokens) runs eagerly into the same cache. Cropping to a
shorter prefix only moves the layers' write position back (transformers'
``StaticLayer.crop``): the entries past it are masked by the causal mask until
they are overwritten.

The logits of the last step stay on the device (``last_logits``);
``device_stats`` gives the token's statistics from them without copying the
vocabulary row. ``_forward`` still returns the host row the ``LogitsBackend``
protocol asks for (the sampler and the live scorer read it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from qdesk.core.chat.backends import TokenCache
from qdesk.core.chat.hf_backend import CACHE_ARG
from qdesk.core.gpu.device_stats import device_stats, stats_from_packed
from qdesk.core.threads import apply_torch_threads


class StaticCacheBackend(TokenCache):
    kind = "hf"

    def __init__(self, model, tokenizer, name: str, n_ctx: int, max_len: int = 4096,
                 compile_step: bool | None = None) -> None:
        from transformers import StaticCache

        super().__init__()
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.n_ctx = min(n_ctx, max_len)
        self.device = next(model.parameters()).device
        self.cache = StaticCache(config=model.config, max_cache_len=self.n_ctx)
        self.last_logits: torch.Tensor | None = None
        if compile_step is None:
            compile_step = self.device.type == "cuda"
        self._step = (torch.compile(self._one_token, mode="reduce-overhead", fullgraph=False)
                      if compile_step else self._one_token)

    def _one_token(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=token, cache_position=position, use_cache=True,
                         logits_to_keep=1, **{CACHE_ARG: self.cache})
        return out.logits[0, -1]

    @torch.inference_mode()
    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        if self.device.type == "cpu":
            apply_torch_threads()
        start = len(self.tokens)
        if start + len(ids) > self.n_ctx:
            raise ValueError(f"the static cache holds {self.n_ctx} tokens")
        token = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        position = torch.arange(start, start + len(ids), device=self.device)
        if len(ids) == 1:
            logits = self._step(token, position)
        else:
            logits = self._one_token(token, position)  # prefill: eager, any length
        self.last_logits = logits.clone()  # a graph's output is overwritten by its next replay
        return self.last_logits.float().cpu().numpy()

    @torch.inference_mode()  # the cache's tensors were made in inference mode
    def _crop(self, n: int) -> None:
        if n == 0:
            self.cache.reset()
            return
        remove = len(self.tokens) - n
        if remove > 0:  # the layers write at their own count: move it back (in place)
            self.cache.crop(-remove)

    def device_stats(self, k: int = 5):
        """Top-k, margin and entropy of the last step, computed on the device."""
        return stats_from_packed(device_stats(self.last_logits, k), k)

    @torch.inference_mode()
    def score(self, ids: Sequence[int]) -> np.ndarray:
        self.reset()
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        return self.model(input_ids=input_ids, use_cache=False).logits[0].float().cpu().numpy()

    def fork(self) -> StaticCacheBackend:
        return StaticCacheBackend(self.model, self.tokenizer, self.name, self.n_ctx, self.n_ctx,
                                  compile_step=self._step is not self._one_token)

    def close(self) -> None:
        self.cache = None
        self.model = None
