"""A few samples of a calibration set as text, for the user to see what the
quantizer will be calibrated on before the minutes it takes."""

from __future__ import annotations

from qdesk.core.quant.calibration import build_calibration


def calibration_preview(spec: str, tokenizer, tokens: int = 256, seed: int = 0,
                        chat_template: bool = False, model=None, count: int = 3) -> list[str]:
    """``count`` windows of ``tokens`` tokens of the set ``spec``, decoded (the same
    draw ``build_calibration`` makes for ``count`` samples). Raises BadInput as
    building the set would (an empty or non-UTF-8 file, too few tokens)."""
    calibration = build_calibration(spec, tokenizer, count, tokens, seed,
                                    chat_template=chat_template, model=model)
    return [tokenizer.decode(row.tolist()) for row in calibration.input_ids]
