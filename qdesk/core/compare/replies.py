"""Reply lengths over a prompt set: every model on every prompt, with
bootstrap intervals, paired differences to the reference and accuracy.

Each prompt is a fresh one-turn chat. With sampling (temperature > 0) each
prompt is answered ``samples`` times with seeds seed, seed+1, …; intervals
resample *prompts* (their samples stay together), so a prompt's answers count
as one unit of evidence, not several.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from qdesk.core.chat.backends import LogitsBackend
from qdesk.core.chat.events import ReplyDone, SamplingConfig
from qdesk.core.chat.generate import generate_steps
from qdesk.core.compare.texts import Prompt
from qdesk.core.errors import BadInput, Cancelled

BOOTSTRAP_RESAMPLES = 2000

_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


def final_number_matches(reply: str, answer: str) -> bool:
    """Whether the last number in ``reply`` equals ``answer`` (numerically)."""
    found = _NUMBER.findall(reply.replace(",", ""))
    if not found:
        return False
    try:
        return abs(float(found[-1]) - float(answer)) < 1e-9
    except ValueError:
        return found[-1].strip() == answer.strip()


@dataclass(frozen=True)
class ReplyRecord:
    model: int  # 0 = the reference
    prompt: int
    sample: int
    tokens: int
    hit_limit: bool
    correct: bool | None  # None: the prompt has no known answer
    text: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float  # bootstrap 95% percentile interval
    hi: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LengthStats:
    """One model on one category of prompts ("all" for the whole set)."""

    model: str
    category: str
    prompts: int
    replies: int
    mean_tokens: Interval
    median_tokens: Interval
    diff_to_reference: Interval | None  # mean paired difference (model − reference), tokens
    hit_limit_share: float
    accuracy: Interval | None  # share of correct final answers, where answers are known

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ReplyGenerated:
    """Progress: one reply is done."""

    done: int
    total: int
    record: ReplyRecord


@dataclass(frozen=True)
class LengthsDone:
    prompt_set: str
    max_new_tokens: int
    samples: int
    stats: tuple[LengthStats, ...]
    records: tuple[ReplyRecord, ...]

    def to_json(self) -> dict:
        return {
            "prompt_set": self.prompt_set,
            "max_new_tokens": self.max_new_tokens,
            "samples": self.samples,
            "stats": [s.to_json() for s in self.stats],
            "replies": [r.to_json() for r in self.records],
        }


def bootstrap_interval(
    per_unit: np.ndarray, statistic, rng: np.random.Generator, resamples: int = BOOTSTRAP_RESAMPLES
) -> Interval:
    """statistic(per_unit) with a 95% percentile interval from resampling units.

    per_unit: (units, k) values, each row one prompt's samples; statistic maps
    such an array to a float.
    """
    n = per_unit.shape[0]
    value = float(statistic(per_unit))
    if n < 2:
        return Interval(value, value, value)
    picks = rng.integers(0, n, size=(resamples, n))
    boots = np.array([statistic(per_unit[p]) for p in picks])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Interval(value, float(lo), float(hi))


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a))


def _median(a: np.ndarray) -> float:
    return float(np.median(a))


def length_stats(
    records: Sequence[ReplyRecord], names: Sequence[str], prompts: Sequence[Prompt],
    seed: int = 0,
) -> tuple[LengthStats, ...]:
    """Per model and category (and "all"), from the records of a full run."""
    n_models = len(names)
    n_prompts = len(prompts)
    samples = 1 + max((r.sample for r in records), default=0)
    tokens = np.zeros((n_models, n_prompts, samples))
    limit = np.zeros((n_models, n_prompts, samples), dtype=bool)
    correct = np.full((n_models, n_prompts, samples), np.nan)
    for r in records:
        tokens[r.model, r.prompt, r.sample] = r.tokens
        limit[r.model, r.prompt, r.sample] = r.hit_limit
        if r.correct is not None:
            correct[r.model, r.prompt, r.sample] = float(r.correct)
    named = sorted({p.category for p in prompts} - {""})
    categories = ["all"] + (named if len(named) > 1 else [])  # one category is "all"
    out = []
    for cat in categories:
        idx = np.array([i for i, p in enumerate(prompts) if cat == "all" or p.category == cat])
        for m in range(n_models):
            rng = np.random.default_rng(seed)
            t = tokens[m, idx]
            diff = None
            if m > 0:
                diff = bootstrap_interval(t - tokens[0, idx], _mean, rng)
            c = correct[m, idx]
            known = ~np.isnan(c[:, 0])
            acc = bootstrap_interval(c[known], _mean, rng) if known.any() else None
            out.append(LengthStats(
                model=names[m], category=cat, prompts=int(idx.size), replies=int(t.size),
                mean_tokens=bootstrap_interval(t, _mean, rng),
                median_tokens=bootstrap_interval(t, _median, rng),
                diff_to_reference=diff,
                hit_limit_share=float(limit[m, idx].mean()),
                accuracy=acc,
            ))
    return tuple(out)


def reply_length_steps(
    backends: Sequence[LogitsBackend],
    prompts: Sequence[Prompt],
    sampling: SamplingConfig,
    samples: int = 1,
    prompt_set: str = "",
    cancel: threading.Event | None = None,
) -> Iterator[ReplyGenerated | LengthsDone]:
    """Every model (backends[0] is the reference) on every prompt; one
    ``ReplyGenerated`` per reply (the cancel point), then ``LengthsDone``."""
    if not prompts:
        raise BadInput("the prompt set is empty")
    if samples < 1:
        raise BadInput(f"--samples must be at least 1, got {samples}")
    if sampling.greedy and samples > 1:
        raise BadInput("several samples per prompt need sampling: set --temperature above 0")
    total = len(backends) * len(prompts) * samples
    records: list[ReplyRecord] = []
    for p, prompt in enumerate(prompts):
        for s in range(samples):
            run = replace(sampling, seed=sampling.seed + s)
            for m, backend in enumerate(backends):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("comparison cancelled")
                ids = backend.tokenizer.encode_chat([{"role": "user", "content": prompt.text}])
                done = None
                for ev in generate_steps(backend, ids, run, cancel):
                    if isinstance(ev, ReplyDone):
                        done = ev
                if done.finish_reason == "cancelled":
                    raise Cancelled("comparison cancelled")
                rec = ReplyRecord(
                    model=m, prompt=p, sample=s,
                    tokens=done.n_tokens - (done.finish_reason == "end"),  # not the end token
                    hit_limit=done.finish_reason == "length",
                    correct=None if prompt.answer is None
                    else final_number_matches(done.text, prompt.answer),
                    text=done.text,
                )
                records.append(rec)
                yield ReplyGenerated(len(records), total, rec)
    names = [b.name for b in backends]
    yield LengthsDone(
        prompt_set, sampling.max_new_tokens, samples,
        length_stats(records, names, prompts, sampling.seed), tuple(records),
    )
