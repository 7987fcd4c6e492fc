"""Numbers and core records as the short texts the widgets show (translated)."""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication


def mib(n: float | None) -> str:
    if n is None:
        return "—"
    if n >= 2**30:
        return QCoreApplication.translate("Formatting", "{n} GiB").format(n=f"{n / 2**30:.2f}")
    return QCoreApplication.translate("Formatting", "{n} MiB").format(n=f"{n / 2**20:,.0f}")


def duration(seconds: float | None) -> str:
    """0:41, 12:03, 1:02:03."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def group_text(group_size: int | None) -> str:
    if group_size in (None, -1):
        return QCoreApplication.translate("Formatting", "per channel")
    return f"g{group_size}"


def quantization_text(q: dict) -> str:
    """A recipe (``ModelFacts.quantization``) as one line: "gptq 4-bit g64 sym · plan uniform"."""
    if not q:
        return ""
    if q.get("method"):
        parts = [str(q["method"])]
        if q.get("bits"):
            parts.append(QCoreApplication.translate("Formatting", "{bits}-bit").format(bits=q["bits"]))
        if "group_size" in q:
            parts.append(group_text(q.get("group_size")))
        if q.get("symmetric") is not None:
            parts.append(QCoreApplication.translate("Formatting", "sym") if q["symmetric"]
                         else QCoreApplication.translate("Formatting", "asym"))
        text = " ".join(parts)
        if q.get("plan"):
            text += " · " + QCoreApplication.translate("Formatting", "plan {plan}").format(plan=q["plan"])
    else:
        text = str(q.get("format", ""))
    if q.get("int8_activations"):
        text += " · " + QCoreApplication.translate("Formatting", "int8 activations (approximate)")
    return text


def _field(check, name: str):
    if isinstance(check, dict):
        return check.get(name)
    return getattr(check, name, None)


def check_text(check) -> tuple[str, bool]:
    """A self-check (the quantization job's ``SelfCheck`` event, or its record as a
    dict) as one line, and whether it warns. Fields are read defensively: a
    missing one is left out."""
    if check is None:
        return "", False
    parts = []
    kld, same = _field(check, "mean_kld"), _field(check, "same_top_p")
    if isinstance(kld, (int, float)):
        parts.append(QCoreApplication.translate("Formatting", "mean KLD {v}").format(v=f"{kld:.4f}"))
    if isinstance(same, (int, float)):
        pct = same * 100 if same <= 1 else same
        parts.append(QCoreApplication.translate("Formatting", "same top p {v}%").format(v=f"{pct:.1f}"))
    rtn = _field(check, "rtn_mean_kld")
    if isinstance(rtn, (int, float)):
        parts.append(QCoreApplication.translate("Formatting", "RTN {v}").format(v=f"{rtn:.4f}"))
    text_name, tokens = _field(check, "text"), _field(check, "tokens")
    if text_name and tokens:
        parts.append(QCoreApplication.translate("Formatting", "on {tokens} tokens of {text}")
                     .format(tokens=tokens, text=text_name))
    plausible = _field(check, "plausible")
    warning = _field(check, "warning")
    warns = plausible is False or bool(warning)
    line = ", ".join(parts)
    if warns:
        note = warning or QCoreApplication.translate("Formatting", "the result looks implausible")
        line = f"⚠ {note}" + (f" ({line})" if line else "")
    return line, warns
