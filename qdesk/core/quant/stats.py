"""What a Linear's calibration inputs tell the quantizers, gathered by a forward hook.

Linears fed the same tensor (q/k/v, gate/up) share one ``InputStats``.
"""

from __future__ import annotations

import torch


class InputStats:
    """Running statistics of a Linear's inputs x (tokens, in).

    hessian: sum of x x^T in float32 (in, in) when asked (GPTQ, AWQ);
    abs_sum: sum of |x| per channel; samples: up to ``max_samples`` rows kept
    (every k-th token) for measuring output error.
    """

    def __init__(self, in_features: int, device, want_hessian: bool, max_samples: int,
                 stride: int, want_cross: bool = False):
        self.hessian = (
            torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
            if want_hessian else None
        )
        # sum of (x_dense - x)^T x over tokens (in, in): how the inputs the dense
        # model feeds this Linear differ from the quantized stream's (GPTQ's
        # dense_targets); x_dense is the same token's input in the dense model
        self.cross = (
            torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
            if want_cross else None
        )
        self.abs_sum = torch.zeros(in_features, dtype=torch.float32, device=device)
        self.tokens = 0
        self.max_samples = max_samples
        self.stride = max(1, stride)
        self._samples: list[torch.Tensor] = []
        self._kept = 0

    def add(self, x: torch.Tensor, x_dense: torch.Tensor | None = None) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        if self.cross is not None:
            if x_dense is None:
                raise ValueError("cross statistics need the dense model's inputs too")
            d = x_dense.reshape(x.shape).float() - x
            self.cross.addmm_(d.t(), x)
        if self.hessian is not None:
            self.hessian.addmm_(x.t(), x)
        if self.hessian is not None:  # AWQ's channel magnitudes, only with a Hessian
            self.abs_sum += x.abs().sum(0)
        self.tokens += x.shape[0]
        if self._kept < self.max_samples:
            rows = x[:: self.stride][: self.max_samples - self._kept]
            self._samples.append(rows.clone())
            self._kept += rows.shape[0]

    @property
    def samples(self) -> torch.Tensor:
        if len(self._samples) > 1:
            self._samples = [torch.cat(self._samples)]
        return self._samples[0]

    @property
    def abs_mean(self) -> torch.Tensor:
        return self.abs_sum / max(1, self.tokens)

    def scale_inputs(self, s: torch.Tensor) -> None:
        """The inputs became x / s (AWQ folded s into the previous op)."""
        inv = 1.0 / s.float()
        if self.hessian is not None:
            self.hessian.mul_(inv.unsqueeze(0) * inv.unsqueeze(1))
        self.abs_sum.mul_(inv)
        self._samples = [self.samples * inv]


def relative_output_error(w: torch.Tensor, wq: torch.Tensor, x: torch.Tensor) -> float:
    """||x (wq - w)^T|| / ||x w^T|| on sample inputs x (tokens, in)."""
    w, wq = w.float(), wq.float()
    num = torch.linalg.matrix_norm(x @ (wq - w).t())
    den = torch.linalg.matrix_norm(x @ w.t()).clamp_min(1e-12)
    return float(num / den)
