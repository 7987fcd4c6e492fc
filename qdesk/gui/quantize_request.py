"""The quantize page's options as one frozen, validated value — the same
options as ``qdesk quantize`` — and the job they describe.

``QuantizeOptions.from_mapping`` reads remembered settings and screenshot-script
words (strings) defensively; ``config()`` and ``plan()`` give core's objects;
``quantize_job`` is the generator the job runner runs (calibration, then
``quantize_steps``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import SignRoundConfig

METHODS = ("rtn", "gptq", "awq", "hqq", "signround")
BITS = (8, 4, 3, 2)
GROUP_SIZES = (-1, 32, 64, 128, 192, 256)
PLAN_PRESETS = ("uniform", "attn-keep", "mlp-keep", "qk-keep", "sensitivity")
CALIBRATION_SETS = ("mix", "general", "code", "chat", "reasoning", "zh", "self")


@dataclass(frozen=True)
class QuantizeOptions:
    method: str = "gptq"
    bits: int = 4
    group_size: int = 64
    symmetric: bool = True
    hqq_zero: str = "int"
    clip_search: bool | None = None  # RTN only; None: the method's own choice
    signround_iters: int = SignRoundConfig.iters  # SignRound only: iterations per block
    # GPTQ and SignRound: aim each layer (block) at the dense model's output; None:
    # the method's own choice (off for GPTQ for its 1.9x time, on for SignRound)
    dense_targets: bool | None = None
    plan: str = "uniform"  # a preset, "custom" (the table), or a plan file
    budget_bpw: float | None = None
    calib: str = "mix"  # a built-in set or a .txt/.jsonl file
    calib_samples: int = 128
    calib_tokens: int = 512
    chat_template: bool = False
    seed: int = 0
    output: str = ""
    force: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BadInput(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.bits not in BITS:
            raise BadInput(f"bits must be one of {', '.join(map(str, BITS))}, not {self.bits}")
        if self.group_size not in GROUP_SIZES:
            raise BadInput(f"group size must be one of {', '.join(map(str, GROUP_SIZES))}, "
                           f"not {self.group_size}")
        if self.hqq_zero not in ("int", "float"):
            raise BadInput(f"HQQ zero must be int or float, not {self.hqq_zero!r}")
        if not 1 <= self.calib_samples <= 100_000 or not 8 <= self.calib_tokens <= 131_072:
            raise BadInput(f"calibration needs 1.. samples of 8.. tokens, not "
                           f"{self.calib_samples} x {self.calib_tokens}")
        if not 0 <= self.signround_iters <= 10_000:
            raise BadInput(f"SignRound iterations must be 0..10000, not {self.signround_iters}")
        if self.budget_bpw is not None and not 1.0 <= self.budget_bpw <= 16.0:
            raise BadInput(f"the bits-per-weight budget must lie in [1, 16], not {self.budget_bpw}")

    @property
    def is_symmetric(self) -> bool:
        return self.symmetric and self.method != "hqq"

    def config(self):
        from qdesk.core.quant.configs import make_config

        extra = {}
        if self.method == "hqq" and self.hqq_zero != "int":
            extra["zero"] = self.hqq_zero
        if self.method == "rtn" and self.clip_search is not None:
            extra["clip_search"] = self.clip_search
        if self.method == "signround":
            extra["iters"] = self.signround_iters
        if self.method in ("gptq", "signround") and self.dense_targets is not None:
            extra["dense_targets"] = self.dense_targets
        return make_config(self.method, bits=self.bits, group_size=self.group_size,
                           symmetric=self.is_symmetric, **extra)

    def plan_object(self, custom_rules: list[dict] | None = None):
        """The core Plan: a preset, the table's rules ("custom"), or a plan file."""
        from qdesk.core.quant.plans import Plan, PlanRule, load_plan

        if self.plan == "custom":
            rules = tuple(PlanRule(**r) for r in custom_rules or [])
            return Plan("custom", rules)
        return load_plan(self.plan, self.budget_bpw if self.plan == "sensitivity" else None)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: dict, base: QuantizeOptions | None = None) -> QuantizeOptions:
        """Options from strings or JSON values (unknown names: BadInput)."""
        base = base or cls()
        known = {f.name: f for f in fields(cls)}
        changes = {}
        for name, raw in values.items():
            if name not in known:
                raise BadInput(f"no quantize option '{name}' (options: {', '.join(known)})")
            changes[name] = _parse(name, raw)
        return replace(base, **changes)


def _parse(name: str, raw):
    if name in ("bits", "calib_samples", "calib_tokens", "seed", "signround_iters"):
        return _int(name, raw)
    if name == "group_size":
        return -1 if str(raw) in ("-1", "channel", "per-channel") else _int(name, raw)
    if name in ("symmetric", "chat_template", "force"):
        return _bool(name, raw)
    if name in ("clip_search", "dense_targets"):
        return None if raw in (None, "", "auto", "none") else _bool(name, raw)
    if name == "budget_bpw":
        if raw in (None, "", "none"):
            return None
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise BadInput(f"{name} must be a number, not {raw!r}") from None
    return str(raw)


def _int(name: str, raw) -> int:
    if isinstance(raw, bool):
        raise BadInput(f"{name} must be an integer, not {raw!r}")
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise BadInput(f"{name} must be an integer, not {raw!r}") from None


def _bool(name: str, raw) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise BadInput(f"{name} must be true or false, not {raw!r}")


def check_before_run(options: QuantizeOptions) -> Path:
    """What can be checked before any work: the output folder (BadInput names
    the problem). Returns the output path."""
    from qdesk.core.quant.checkpoint import check_output_dir

    if not options.output.strip():
        raise BadInput("choose an output folder for the quantized model")
    out = Path(options.output).expanduser()
    check_output_dir(out, options.force)
    if options.calib not in CALIBRATION_SETS:
        path = Path(options.calib).expanduser()
        if not path.is_file():
            raise BadInput(f"calibration file {options.calib}: no such file")
    return out


def quantize_job(loaded, options: QuantizeOptions, plan, out: Path):
    """The job (a generator, run in a worker): build the calibration set, then
    ``quantize_steps``; returns its ``QuantizeResult``."""
    from qdesk.core.quant.calibration import build_calibration
    from qdesk.core.quant.steps import quantize_steps

    config = options.config()
    calibration = build_calibration(
        options.calib, loaded.hf_tokenizer, options.calib_samples, options.calib_tokens,
        options.seed, chat_template=options.chat_template, model=loaded.model,
    )
    result = yield from quantize_steps(loaded, config, plan, calibration, output_dir=out,
                                       force=options.force)
    return result
