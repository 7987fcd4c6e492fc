"""The registry from config type to implementation, and the one-tensor entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from qdesk.core.errors import BadInput
from qdesk.core.quant.awq import apply_awq
from qdesk.core.quant.configs import (
    AWQConfig,
    GPTQConfig,
    HQQConfig,
    QuantConfig,
    RTNConfig,
    SignRoundConfig,
)
from qdesk.core.quant.gptq import quantize_gptq
from qdesk.core.quant.hqq import quantize_hqq
from qdesk.core.quant.primitives import QuantizedWeight
from qdesk.core.quant.rtn import quantize_output_clipped, quantize_rtn
from qdesk.core.quant.signround import quantize_signround_alone, tune_block


@dataclass(frozen=True)
class Method:
    """quantize(w (out, in), config, stats) -> QuantizedWeight; ``prepare_layer``
    (layer, configs, stats, family) may transform a whole decoder layer first
    (AWQ's scale folding, as the family's layout describes it); ``tune_block``
    (layer, configs, inputs, kwargs, dtype, index, total, targets=) is a
    generator that quantizes a whole decoder block from its inputs, towards the
    dense model's activations when the job passes them (SignRound), and returns
    {name: QuantizedWeight}. ``needs_calibration``: the method uses every
    calibration sample (not only a few to measure errors)."""

    quantize: Callable[..., QuantizedWeight]
    needs_hessian: bool = False
    prepare_layer: Callable | None = None
    tune_block: Callable | None = None
    needs_calibration: bool = False

    @property
    def uses_calibration(self) -> bool:
        return self.needs_hessian or self.needs_calibration


METHODS: dict[type[QuantConfig], Method] = {
    RTNConfig: Method(quantize_rtn),
    GPTQConfig: Method(quantize_gptq, needs_hessian=True),
    AWQConfig: Method(quantize_output_clipped, needs_hessian=True, prepare_layer=apply_awq),
    HQQConfig: Method(quantize_hqq),
    SignRoundConfig: Method(quantize_signround_alone, tune_block=tune_block,
                            needs_calibration=True),
}


# RTN weighted by the inputs' mean square gathers the same statistics GPTQ does.
_RTN_WEIGHTED = Method(quantize_rtn, needs_hessian=True)


def method_for(config: QuantConfig) -> Method:
    if isinstance(config, RTNConfig) and config.act_weighted:
        return _RTN_WEIGHTED
    try:
        return METHODS[type(config)]
    except KeyError:
        raise BadInput(f"no quantizer for {type(config).__name__}") from None


def check_divides(name: str, in_features: int, group_size: int) -> None:
    if group_size != -1 and in_features % group_size:
        raise BadInput(
            f"group size {group_size} does not divide the input width {in_features} of {name} "
            "(choose a divisor, -1 for per-channel, or a plan that falls back)"
        )


def quantize_weight(w: torch.Tensor, config: QuantConfig, stats=None) -> QuantizedWeight:
    """Quantize one weight (out, in). GPTQ needs ``stats.hessian``; AWQ's scaling
    needs a whole layer (see ``quantize_steps``), alone it rounds like RTN."""
    check_divides("this weight", w.shape[1], config.group_size)
    method = method_for(config)
    if method.needs_hessian and method.prepare_layer is None and getattr(
            stats, "hessian", None) is None:
        raise BadInput(f"{config.method} needs calibration statistics (a Hessian) for every weight")
    return method.quantize(w, config, stats)
