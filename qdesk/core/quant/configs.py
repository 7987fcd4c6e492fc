"""One frozen, validated configuration per method. Invalid values raise BadInput
with one line naming the option."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

from qdesk.core.errors import BadInput

BITS = (8, 4, 3, 2)
GROUP_SIZES = (-1, 32, 64, 128, 192, 256)  # -1: one group per output channel


@dataclass(frozen=True)
class QuantConfig:
    """What every method shares: integer width, group size, symmetry."""

    bits: int = 4
    group_size: int = 64
    symmetric: bool = True
    # The older symmetric grid (scale max|w| / (2^(b-1) - 1), positive scales, one
    # code unused); False uses all 2^b codes (primitives' module doc). Kept for
    # comparison (benchmarks) and for a consumer that needs positive scales.
    narrow_grid: bool = False

    # Settings left unset (None) that the config chose by itself from the others;
    # ``reshaped`` chooses them again for other bits (a plan's per-layer rule).
    auto: tuple[str, ...] = field(default=(), repr=False, compare=False)

    method: ClassVar[str] = ""

    def _choose(self, name: str, value) -> None:
        """Fill the unset setting ``name`` with ``value`` and remember it was chosen."""
        object.__setattr__(self, name, value)
        if name not in self.auto:
            object.__setattr__(self, "auto", (*self.auto, name))

    def reshaped(self, bits: int | None = None, group_size: int | None = None) -> QuantConfig:
        """This config at other bits or group size; what it chose by itself is
        chosen again for the new shape, what the user set is kept."""
        return replace(
            self,
            bits=self.bits if bits is None else bits,
            group_size=self.group_size if group_size is None else group_size,
            auto=(),
            **{name: None for name in self.auto},
        )

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise BadInput(f"bits must be one of {', '.join(map(str, BITS))}, not {self.bits}")
        if not isinstance(self.group_size, int) or (
            self.group_size != -1 and (self.group_size < 8 or self.group_size % 8)
        ):
            raise BadInput(
                f"group size must be -1 (per channel) or a positive multiple of 8, "
                f"not {self.group_size}"
            )

    def describe(self) -> str:
        g = "per-channel" if self.group_size == -1 else f"g{self.group_size}"
        return f"{self.method} {self.bits}-bit {g} {'sym' if self.symmetric else 'asym'}"

    def to_json(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "auto"}
        return {"method": self.method, **values}


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise BadInput(f"{name} must lie in [{lo}, {hi}], not {value}")


@dataclass(frozen=True)
class RTNConfig(QuantConfig):
    """Round to nearest. ``clip_search`` narrows each group's range to the one with
    the least squared weight error (mse_shrink); False is plain min-max rounding.

    Left unset it follows measurement on the demo model (4-bit g64, mean KLD en+zh,
    benchmarks/bench_quantize.py): symmetric searches (0.448 against min-max's
    0.579: max-abs wastes half a step of the codes on one side, and narrowing wins
    it back), asymmetric does not (min-max 0.352 against 0.393 with the search, and
    a 2-D (low, high) search, with or without |w|^2 weighting, lost too): an
    asymmetric min-max grid already fits the group, and clipping its largest
    weights removes the values that matter most to the output, which weight MSE
    does not see. The resolved value is what the recipe records. (Those figures
    are from the older symmetric grid, which the search still follows; on the full
    grid min-max measures 0.389 and the search 0.414, so it is off there.)

    ``act_weighted`` is off by default although it measured better (0.307 against
    min-max's 0.389, same text): it needs the calibration forwards and Hessians of
    every layer, which took the job from 61 s to 685 s on the same (loaded)
    machine, and plain RTN is also the self-check's reference."""

    clip_search: bool | None = None
    # Choose each group's range by the squared error weighted per input column by
    # the calibration inputs' mean square (an importance matrix's statistic):
    # needs calibration, no Hessian solve.
    act_weighted: bool = False
    method: ClassVar[str] = "rtn"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clip_search is None:
            # On the full symmetric grid the search lost to min-max (demo, 4-bit g64,
            # mean KLD en+zh: 0.414 against 0.389): it only wins back the half step
            # the old grid wastes, so it is chosen for that grid alone.
            self._choose("clip_search", self.symmetric and self.narrow_grid)


@dataclass(frozen=True)
class GPTQConfig(QuantConfig):
    """GPTQ: ``damp`` as a fraction of the Hessian's mean diagonal, column
    ``block_size``, ``act_order`` quantizes columns in decreasing Hessian diagonal
    (with groups chosen up front from the original weights, "static groups", so
    the codes keep the natural column order and every export holds them).

    act-order is on by default: it was what made GPTQ trail AWQ. Measured on the
    demo, 4-bit g64 sym, the output error of decoder layers 0 / 10 / 20 on
    held-out samples (benchmarks/bench_gptq_layers.py): off 0.065 / 0.135 / 0.222,
    on 0.059 / 0.121 / 0.173 (AWQ 0.088 / 0.141 / 0.158); the full symmetric grid
    is worth 0.151 -> 0.141 of the mean, dampening 0.1 0.137, 16 instead of 128
    calibration samples 0.145, the range search nothing measurable.

    ``true_sequential``: a layer's stages (q/k/v, o, gate/up, down, in the order
    its forward calls them) are quantized one after another, each from the
    inputs the already quantized stages produce, as GPTQ's reference code does;
    otherwise every Hessian comes from the dense layer. Off by default: on the
    demo (4-bit g64 sym, mix 32 x 512, held-out en+zh) it measured mean KLD
    0.2200 against 0.2218, Same top p 70.8% against 71.8%, in 1.47x the time.

    ``act_weighted`` is on by default: the static groups' ranges are what
    act-order's GPTQ cannot revise, and choosing them by the error the inputs
    actually see (not the plain weight error) took GPTQ below AWQ on the demo
    (4-bit g64 sym, mix 128 x 512, held-out en+zh, one run): mean KLD 0.2038
    against act-order alone 0.2395 and AWQ 0.2162, Same top p 72.0% / 71.8%,
    417 s against AWQ's 434 s (benchmarks/bench_quantize.py, rows gptqaw-sym,
    gptq-sym, awq-sym).

    ``dense_targets`` is off by default for its time: with it (and act-weighted
    ranges) the same run measured 0.1767, Same top p 73.9%, but in 809 s, 1.94x,
    since every layer also runs the dense model's stream and gathers a cross
    term; SignRound, which aims at the dense model by default, is the slower,
    better method (``qdesk quantize --dense-targets`` turns it on here)."""

    damp: float = 0.01
    block_size: int = 128
    act_order: bool = True
    clip_search: bool = True
    true_sequential: bool = False
    # Static groups' ranges chosen by the rounding error weighted per input column
    # by the calibration inputs' mean square (RTNConfig.act_weighted's search)
    # rather than by the plain weight error.
    act_weighted: bool = True
    # Aim each Linear at the dense model's own output: minimise
    # ||W_q x - W x_dense||^2 over the quantized stream's inputs x and the dense
    # model's x_dense for the same tokens, not ||W_q x - W x||^2 (Li et al. 2025,
    # "GPTQv2: Efficient Finetuning-Free Quantization with Asymmetric
    # Calibration"), so each layer also makes up for the error the layers before
    # it left. dense_alpha scales the asymmetry term (the paper's code uses 0.25).
    dense_targets: bool = False
    dense_alpha: float = 0.25
    method: ClassVar[str] = "gptq"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range("damp", self.damp, 1e-6, 1.0)
        _check_range("GPTQ dense_alpha", self.dense_alpha, 0.0, 4.0)
        if self.block_size < 1:
            raise BadInput(f"block size must be positive, not {self.block_size}")
        if self.dense_targets and self.true_sequential:
            raise BadInput("GPTQ: dense targets and true-sequential cannot be combined")


@dataclass(frozen=True)
class AWQConfig(QuantConfig):
    """AWQ: per-input-channel scales s = mean|x|^alpha, alpha searched on a grid of
    ``grid`` points; scales folded into the preceding norm or Linear."""

    grid: int = 20
    clip_search: bool = True
    max_tokens: int = 4096  # calibration tokens used for the search
    method: ClassVar[str] = "awq"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 2 <= self.grid <= 100:
            raise BadInput(f"AWQ grid must be 2..100 points, not {self.grid}")


HQQ_ZEROS = ("int", "float")


@dataclass(frozen=True)
class HQQConfig(QuantConfig):
    """HQQ: half-quadratic optimisation of the zero (and scale) with an lp-norm
    (p < 1) error; calibration-free. ``zero``: "int" rounds the zero to an integer
    (packed checkpoint, bits + 16 bits per group); "float" keeps a 16-bit float
    zero as the hqq library does (2 x 16 bits per group; the checkpoint then holds
    unpacked int8 codes, see ``checkpoint._naive``). ``refit``: least-squares refit
    of the scale (and a float zero) with the codes fixed.

    "int" is the default because it is the packed ``pack-quantized`` checkpoint
    the format promises; "float" is the better quantizer at 4 bits (demo model,
    4-bit g64, mean KLD en+zh on qdesk's held-out text: 0.265 at 4.50 bpw against
    0.352 at 4.31; the hqq 0.2.8 library itself, same format and text, 0.273) in a
    file about 1.9x larger for the decoder weights, and the worse one at 3 bits
    (1.93 against 1.24)."""

    symmetric: bool = False
    iters: int = 20
    lp_norm: float = 0.7
    beta: float = 10.0
    kappa: float = 1.01
    zero: str = "int"
    refit: bool | None = None  # unset: on for a float zero, off for an integer one
    method: ClassVar[str] = "hqq"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.symmetric:
            raise BadInput("HQQ optimises a zero point: it is asymmetric only (drop --sym)")
        _check_range("lp_norm", self.lp_norm, 0.1, 2.0)
        if not 1 <= self.iters <= 1000:
            raise BadInput(f"HQQ iterations must be 1..1000, not {self.iters}")
        if self.zero not in HQQ_ZEROS:
            raise BadInput(f"HQQ zero must be one of {', '.join(HQQ_ZEROS)}, not {self.zero!r}")
        if self.refit is None:
            # Measured on the demo model, g64, mean KLD en+zh: the integer zero's
            # scale refit hurts at 4 bits (0.362 against 0.352 without) and helps
            # at 3 (1.243 against 1.357); the float zero's fit helps (0.265 / 0.269).
            self._choose("refit", self.zero == "float" or self.bits <= 3)


SIGNROUND_SELECT = ("fixed", "batch", "last", "heldout")


@dataclass(frozen=True)
class SignRoundConfig(QuantConfig):
    """SignRound: per decoder block, ``iters`` signed-gradient steps on the rounding
    offsets (and, with ``minmax_tuning``, each group's min/max clipping) over
    mini-batches of ``batch_size`` calibration samples; ``lr`` None = 1 / iters.

    The paper's and auto-round's defaults are 200 iterations of batch 8; qdesk's
    are 100 of batch 4, an eighth of the work, keeping the state that scores best
    on held-out calibration samples: on the demo (4-bit g64 symmetric, default
    calibration mix 128 x 512, held-out English + Chinese) mean KLD 0.1297,
    Same top p 76.9%, in 1661 s on a quiet 2-core AVX2 CPU, where auto-round
    0.16.1 at its defaults takes about 131 minutes (extrapolated from 2 and 10
    iterations) for 0.128 (issue #14). 50 iterations: 0.137 (held-out), 0.143
    (last), 0.148 (batch), in about 1000 s (benchmarks/bench_quantize.py).

    ``dense_targets``: each block learns to turn the activations the quantized
    blocks before it produce into what the dense model's block outputs on the
    dense model's own activations, so it also makes up for the error the earlier
    blocks left (auto-round's default, ``enable_quanted_input``); False: into
    the dense block's output on the same quantized activations (its own error
    only). Costs one more set of activations and one dense forward per block.

    ``select``: which parameters are kept (``signround._Keeper``): "heldout"
    (the default), the lowest loss on the last ``batch_size`` calibration
    samples, which are then not tuned on, measured every 10 iterations (a
    forward each), or "batch" when there are fewer than 8 batches of samples to
    spare them from; "batch", the lowest mini-batch loss (the paper's and
    auto-round's: mini-batch losses differ more by their samples than by the
    parameters, so it keeps whichever state met the easiest batch); "fixed",
    the lowest loss on the first samples, tuned on too (it rewards overfitting
    them: a tiny random Qwen2 at 6 iterations kept a state worse than RTN);
    "last"."""

    iters: int = 100
    lr: float | None = None
    batch_size: int = 4
    minmax_tuning: bool = True
    dense_targets: bool = True
    select: str = "heldout"
    method: ClassVar[str] = "signround"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.iters <= 10000:
            raise BadInput(f"SignRound iterations must be 0..10000, not {self.iters}")
        if self.lr is not None:
            _check_range("SignRound lr", self.lr, 1e-6, 1.0)
        if not 1 <= self.batch_size <= 1024:
            raise BadInput(f"SignRound batch size must be 1..1024, not {self.batch_size}")
        if self.select not in SIGNROUND_SELECT:
            raise BadInput(f"SignRound select must be one of {', '.join(SIGNROUND_SELECT)}, "
                           f"not {self.select!r}")


CONFIGS: dict[str, type[QuantConfig]] = {
    c.method: c for c in (RTNConfig, GPTQConfig, AWQConfig, HQQConfig, SignRoundConfig)
}


def make_config(method: str, **options) -> QuantConfig:
    """The config of a method by name; unknown method or option -> BadInput."""
    cls = CONFIGS.get(method)
    if cls is None:
        raise BadInput(f"unknown method '{method}' (choose {', '.join(CONFIGS)})")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise BadInput(f"{method} has no option {', '.join(unknown)}")
    return cls(**options)
