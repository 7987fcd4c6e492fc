"""The llama.cpp-style statistics table: one row per statistic, one column per
model, uncertainties as ± (llama-perplexity --kl-divergence's layout)."""

from __future__ import annotations

from PySide6.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem, QWidget


def divergence_rows(r) -> list[tuple[str, str]]:
    """(label, text) for a core ``DivergenceReport``, as llama-perplexity prints them."""
    rows = [
        ("Mean PPL(Q)", f"{r.ppl_q:.6f} ± {r.ppl_q_unc:.6f}"),
        ("Mean PPL(base)", f"{r.ppl_base:.6f} ± {r.ppl_base_unc:.6f}"),
        ("Cor(ln PPL(Q), ln PPL(base))", f"{100 * r.cor_ln_ppl:.2f}%"),
        ("Mean ln(PPL(Q)/PPL(base))", f"{r.ln_ppl_ratio:.6f} ± {r.ln_ppl_ratio_unc:.6f}"),
        ("Mean PPL(Q)/PPL(base)", f"{r.ppl_ratio:.6f} ± {r.ppl_ratio_unc:.6f}"),
        ("Mean PPL(Q)-PPL(base)", f"{r.ppl_diff:.6f} ± {r.ppl_diff_unc:.6f}"),
        ("Mean KLD", f"{r.mean_kld:.6f} ± {r.mean_kld_unc:.6f}"),
    ]
    rows += [(f"{label} KLD", f"{v:.6f}") for label, v in r.kld_percentiles]
    rows.append(("Mean Δp", f"{100 * r.mean_dp:.3f} ± {100 * r.mean_dp_unc:.3f} %"))
    rows += [(f"{label} Δp", f"{100 * v:.3f}%") for label, v in r.dp_percentiles]
    rows += [
        ("RMS Δp", f"{100 * r.rms_dp:.3f} ± {100 * r.rms_dp_unc:.3f} %"),
        ("Same top p", f"{100 * r.same_top_p:.3f} ± {100 * r.same_top_p_unc:.3f} %"),
        ("Flips", f"{r.flips} of {r.tokens}"),
        ("Windows × ctx", f"{r.windows} × {r.ctx}"),
    ]
    return rows


class CompareTable(QTableWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.labels: list[str] = []

    def show_reports(self, reports) -> None:
        self.clear()
        if not reports:
            self.setRowCount(0)
            self.setColumnCount(0)
            return
        rows = [divergence_rows(r) for r in reports]
        self.labels = [label for label, _ in rows[0]]
        self.setRowCount(len(self.labels))
        self.setColumnCount(len(reports))
        self.setVerticalHeaderLabels(self.labels)
        self.setHorizontalHeaderLabels([r.model if len(r.model) <= 22 else r.model[:21] + "…"
                                        for r in reports])
        for col, r in enumerate(reports):
            self.horizontalHeaderItem(col).setToolTip(r.model)
        for col, model_rows in enumerate(rows):
            for row, (_, text) in enumerate(model_rows):
                self.setItem(row, col, QTableWidgetItem(text))

    def value(self, label: str, column: int) -> str:
        return self.item(self.labels.index(label), column).text()
