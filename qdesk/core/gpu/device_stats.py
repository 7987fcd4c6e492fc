"""A token's statistics (top-k, margin, entropy) computed where the logits are.

On a GPU the vocabulary row never has to cross to the host for the statistics:
``device_stats`` returns one small tensor (2k + 2 float32 values: k ids, k
probabilities, margin, entropy) whose single copy is the only transfer per
token. The arithmetic is ``qdesk.core.chat.stats.token_distribution``'s
(float32 exponentials, H = log S - sum(e y) / S with y = z - max z), so both
agree to float32 rounding; ties among equal logits may come out in another
order than numpy's (lower id first).
"""

from __future__ import annotations

import torch

from qdesk.core.chat.stats import DistributionStats


def device_stats(logits: torch.Tensor, k: int) -> torch.Tensor:
    """logits (vocab,) on any device -> float32 (2k + 2,): ids, probs, margin, entropy."""
    z = logits.float()
    y = z - z.max()
    e = torch.exp(y)
    total = e.sum(dtype=torch.float64)
    entropy = torch.log(total) - torch.dot(e.double(), y.double()) / total
    top = torch.topk(z, max(k, 2))
    probs = torch.exp(top.values - z.max()).double() / total
    margin = (probs[0] - probs[1]).clamp_min(0.0)
    return torch.cat([top.indices[:k].float(), probs[:k].float(),
                      margin.float().reshape(1), entropy.clamp_min(0.0).float().reshape(1)])


def stats_from_packed(packed: torch.Tensor, k: int) -> DistributionStats:
    """The host side: ``device_stats``' tensor (copied once) as DistributionStats."""
    values = packed.cpu().tolist()
    return DistributionStats(
        top_ids=tuple(int(i) for i in values[:k]),
        top_probs=tuple(float(p) for p in values[k : 2 * k]),
        margin=float(values[2 * k]),
        entropy=float(values[2 * k + 1]),
    )
