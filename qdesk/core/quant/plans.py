"""Mixed-precision plans: module-name patterns -> (bits, group size, method) or keep.

Rules are tried in order; the first whose pattern matches a module's full name
decides; modules no rule matches get the job's config. Patterns are shell globs
(``*.self_attn.q_proj``) or regular expressions prefixed ``re:``.

A plan file (YAML or JSON)::

    name: my-plan
    on_indivisible: per-channel      # error (default) | per-channel | keep
    rules:
      - {match: "*.self_attn.[qk]_proj", keep: true}
      - {match: "*.mlp.down_proj", bits: 8}
      - {match: "*.layers.0.*", method: rtn, bits: 8, group_size: 32}
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import QuantConfig, make_config

ON_INDIVISIBLE = ("error", "per-channel", "keep")


@dataclass(frozen=True)
class PlanRule:
    match: str
    keep: bool = False
    bits: int | None = None
    group_size: int | None = None
    method: str | None = None

    def __post_init__(self) -> None:
        # Plan files are untrusted input: every field's type, where it enters.
        if not isinstance(self.match, str):
            raise BadInput(f"a plan rule's 'match' is {str(self.match)[:40]!r}, not a pattern string")
        if not isinstance(self.keep, bool):
            raise BadInput(f"plan rule {self.match!r}: 'keep' must be true or false")
        if self.bits is not None and (type(self.bits) is not int or self.bits not in (2, 3, 4, 8)):
            raise BadInput(f"plan rule {self.match!r}: bits must be one of 8, 4, 3, 2, "
                           f"not {str(self.bits)[:20]!r}")
        if self.group_size is not None and (type(self.group_size) is not int
                                            or not (self.group_size == -1 or self.group_size > 0)):
            raise BadInput(f"plan rule {self.match!r}: group_size must be -1 or a positive "
                           f"integer, not {str(self.group_size)[:20]!r}")
        if self.method is not None and not isinstance(self.method, str):
            raise BadInput(f"plan rule {self.match!r}: method must be a name")
        if not self.match:
            raise BadInput("a plan rule has an empty 'match' pattern")
        if self.match.startswith("re:"):
            try:
                re.compile(self.match[3:])
            except re.error as e:
                raise BadInput(f"plan pattern {self.match!r} is not a regular expression: {e}") from None

    def matches(self, name: str) -> bool:
        if self.match.startswith("re:"):
            return re.search(self.match[3:], name) is not None
        return fnmatch.fnmatchcase(name, self.match)

    def config_for(self, base: QuantConfig) -> QuantConfig | None:
        if self.keep:
            return None
        bits = self.bits if self.bits is not None else base.bits
        group = self.group_size if self.group_size is not None else base.group_size
        if self.method is None or self.method == base.method:
            return base.reshaped(bits, group)
        symmetric = False if self.method == "hqq" else base.symmetric
        return make_config(self.method, bits=bits, group_size=group, symmetric=symmetric)


@dataclass(frozen=True)
class Plan:
    """``sensitivity``: measure, then give more bits to the worst layers until the
    average bits per weight reaches ``budget_bpw`` (default: 0.5 above uniform)."""

    name: str = "uniform"
    rules: tuple[PlanRule, ...] = ()
    on_indivisible: str = "error"
    sensitivity: bool = False
    budget_bpw: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sensitivity, bool):
            raise BadInput(f"a plan's 'sensitivity' must be true or false, not {self.sensitivity!r}")
        b = self.budget_bpw
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float))
                              or not 1.0 <= b <= 32.0):  # NaN fails the range too
            raise BadInput(f"budget_bpw must be a number of bits per weight in 1..32, not {b!r}")
        if not isinstance(self.on_indivisible, str) or self.on_indivisible not in ON_INDIVISIBLE:
            raise BadInput(
                f"on_indivisible must be one of {', '.join(ON_INDIVISIBLE)}, "
                f"not {self.on_indivisible!r}"
            )

    def resolve(self, in_features: dict[str, int], base: QuantConfig) -> dict[str, QuantConfig | None]:
        """Module name -> its config (None = keep). Raises BadInput naming a module
        whose width the group size does not divide, unless the plan falls back."""
        from qdesk.core.quant.methods import check_divides

        out: dict[str, QuantConfig | None] = {}
        for name, width in in_features.items():
            rule = next((r for r in self.rules if r.matches(name)), None)
            config = base if rule is None else rule.config_for(base)
            if config is not None and config.group_size != -1 and width % config.group_size:
                if self.on_indivisible == "per-channel":
                    config = config.reshaped(group_size=-1)
                elif self.on_indivisible == "keep":
                    config = None
                else:
                    check_divides(name, width, config.group_size)
            out[name] = config
        return out

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "rules": [r.__dict__ for r in self.rules],
            "on_indivisible": self.on_indivisible,
            "sensitivity": self.sensitivity,
            "budget_bpw": self.budget_bpw,
        }


_ATTN = "*.self_attn.*_proj"
_MLP = "*.mlp.*_proj"

PRESETS: dict[str, Plan] = {
    "uniform": Plan("uniform"),
    "attn-keep": Plan("attn-keep", (PlanRule(_ATTN, keep=True),)),
    "mlp-keep": Plan("mlp-keep", (PlanRule(_MLP, keep=True),)),
    "qk-keep": Plan(
        "qk-keep",
        (
            PlanRule("*.self_attn.q_proj", keep=True),
            PlanRule("*.self_attn.k_proj", keep=True),
            PlanRule("*.self_attn.v_proj", bits=8),
        ),
    ),
    "sensitivity": Plan("sensitivity", sensitivity=True),
}


def load_plan(spec: str | Path, budget_bpw: float | None = None) -> Plan:
    """A preset name or a .yaml/.yml/.json plan file."""
    text = str(spec)
    if text in PRESETS:
        plan = PRESETS[text]
        if budget_bpw is not None and not plan.sensitivity:
            raise BadInput(f"--budget-bpw applies to the sensitivity plan, not '{text}' "
                           "(add --plan sensitivity)")
        return replace(plan, budget_bpw=budget_bpw) if budget_bpw is not None else plan
    path = Path(text).expanduser()
    if not path.is_file():
        raise BadInput(f"plan '{text}': neither a preset ({', '.join(PRESETS)}) nor a file")
    try:
        raw = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            import yaml

            data = yaml.safe_load(raw)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BadInput(f"{path}: not a readable plan ({e})".splitlines()[0]) from None
    except Exception as e:  # yaml.YAMLError
        raise BadInput(f"{path}: not a readable plan ({type(e).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rules", []), list):
        raise BadInput(f"{path}: a plan is a mapping with a 'rules' list")
    known = {"match", "keep", "bits", "group_size", "method"}
    rules = []
    for i, r in enumerate(data.get("rules", [])):
        if not isinstance(r, dict) or set(r) - known:
            raise BadInput(f"{path}: rule {i + 1} must be a mapping of {', '.join(sorted(known))}")
        rules.append(PlanRule(**r))
    return Plan(
        name=str(data.get("name", path.stem)),
        rules=tuple(rules),
        on_indivisible=str(data.get("on_indivisible", "error")),
        sensitivity=data.get("sensitivity", False),
        budget_bpw=data.get("budget_bpw", budget_bpw),
    )
