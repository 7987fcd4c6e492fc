"""The transformers backend: a causal LM with a growing KV cache."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from qdesk.core.chat.backends import TokenCache
from qdesk.core.chat.tokenizers import HFChatTokenizer


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

    @torch.inference_mode()
    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        out = self.model(
            input_ids=input_ids,
            past_key_values=self._cache,
            use_cache=True,
            logits_to_keep=1,  # the output head only for the last position
        )
        self._cache = out.past_key_values
        return out.logits[0, -1].float().cpu().numpy()

    def _crop(self, n: int) -> None:
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
        logits = self.model(input_ids=input_ids, use_cache=False).logits[0]
        return logits.float().cpu().numpy()

    def fork(self) -> HFBackend:
        """A second backend over the same weights with its own (empty) KV cache."""
        return HFBackend(self.model, self.tokenizer, self.name, self.n_ctx)

    def close(self) -> None:
        self._cache = None
        self.model = None
