"""Quantized weights kept packed at run time: ``QuantLinear`` and the loader
that puts it in a transformers model (``plan_packed_load``).

Importing the package loads torch (its modules are torch modules); callers that
must stay light import it inside functions.
"""

from qdesk.core.packed.cpu_kernels import NotExact
from qdesk.core.packed.loading import LinearSpec, PackedPlan, plan_packed_load
from qdesk.core.packed.placement import packed_placement
from qdesk.core.packed.quant_linear import QuantLinear, pack_linears

__all__ = ["LinearSpec", "NotExact", "PackedPlan", "QuantLinear", "packed_placement",
           "pack_linears", "plan_packed_load"]
