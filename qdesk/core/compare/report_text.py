"""Plain-text renderings of comparison results, laid out like llama-perplexity's."""

from __future__ import annotations

from qdesk.core.compare.divergence import DivergenceReport
from qdesk.core.compare.replies import LengthsDone


def divergence_text(r: DivergenceReport) -> str:
    lines = [
        f"== {r.model} vs {r.reference}: {r.windows} windows of {r.ctx}, "
        f"{r.tokens} tokens scored, {r.seconds:.1f} s ==",
        "====== Perplexity statistics ======",
        f"Mean PPL(Q)                   : {r.ppl_q:10.6f} ± {r.ppl_q_unc:10.6f}",
        f"Mean PPL(base)                : {r.ppl_base:10.6f} ± {r.ppl_base_unc:10.6f}",
        f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * r.cor_ln_ppl:6.2f}%",
        f"Mean ln(PPL(Q)/PPL(base))     : {r.ln_ppl_ratio:10.6f} ± {r.ln_ppl_ratio_unc:10.6f}",
        f"Mean PPL(Q)/PPL(base)         : {r.ppl_ratio:10.6f} ± {r.ppl_ratio_unc:10.6f}",
        f"Mean PPL(Q)-PPL(base)         : {r.ppl_diff:10.6f} ± {r.ppl_diff_unc:10.6f}",
        "",
        "====== KL divergence statistics ======",
        f"Mean    KLD: {r.mean_kld:10.6f} ± {r.mean_kld_unc:10.6f}",
    ]
    lines += [f"{_label(lab)} KLD: {v:10.6f}" for lab, v in r.kld_percentiles]
    lines += ["", "====== Token probability statistics ======",
              f"Mean    Δp: {100 * r.mean_dp:6.3f} ± {100 * r.mean_dp_unc:5.3f} %"]
    lines += [f"{_label(lab)} Δp: {100 * v:6.3f}%" for lab, v in r.dp_percentiles]
    lines += [
        f"RMS Δp    : {100 * r.rms_dp:6.3f} ± {100 * r.rms_dp_unc:5.3f} %",
        f"Same top p: {100 * r.same_top_p:6.3f} ± {100 * r.same_top_p_unc:5.3f} %",
        "",
        "====== Flips by reference margin (p1 - p2) ======",
        "margin          tokens   flips   flip rate",
    ]
    for b in r.flip_bins:
        close = "]" if b.hi >= 1.0 else ")"
        rate = "-" if b.flip_rate is None else f"{100 * b.flip_rate:6.2f}%"
        lines.append(f"[{b.lo:.2f}, {b.hi:.2f}{close}   {b.tokens:7d} {b.flips:7d}   {rate:>9}")
    if r.flips:
        lines.append(f"smallest margin with a flip: {r.min_flip_margin:.4f}; "
                     f"half of the {r.flips} flips below margin {r.median_flip_margin:.4f}")
    else:
        lines.append("no flips")
    return "\n".join(lines)


def _label(label: str) -> str:
    return {"Maximum": "Maximum", "Median": "Median ", "Minimum": "Minimum"}.get(
        label, f"{label:>6} "
    )


def lengths_text(done: LengthsDone) -> str:
    lines = [f"== reply lengths: {done.prompt_set}, max {done.max_new_tokens} new tokens, "
             f"{done.samples} sample(s) per prompt; [95% bootstrap interval] =="]
    head = (f"{'model':<34} {'category':<14} {'n':>4} {'mean tokens':>24} {'median':>22} "
            f"{'minus reference':>24} {'at limit':>8} {'accuracy':>22}")
    lines.append(head)
    for s in done.stats:
        diff = "-" if s.diff_to_reference is None else _iv(s.diff_to_reference, "+.1f")
        acc = "-" if s.accuracy is None else _iv(s.accuracy, ".0%")
        lines.append(
            f"{s.model[:34]:<34} {s.category[:14]:<14} {s.replies:>4} "
            f"{_iv(s.mean_tokens, '.1f'):>24} {_iv(s.median_tokens, '.1f'):>22} {diff:>24} "
            f"{s.hit_limit_share:>8.0%} {acc:>22}"
        )
    return "\n".join(lines)


def _iv(iv, fmt: str) -> str:
    return f"{iv.value:{fmt}} [{iv.lo:{fmt}}, {iv.hi:{fmt}}]"
