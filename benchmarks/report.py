"""Results: what was measured (sections of rows of figures), the table on stdout and the JSON.

Every figure of every row is the median of its runs, shown with their spread (min-max) and
its ratio to the baseline row of the same section: row / baseline, for every figure (so for
rates above 1 is better, for times, memory and CPU below 1 is better; each section's title
says which).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Figure", "Measurement", "RowResult", "Section", "render", "to_json"]

Better = Literal["higher", "lower"]


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured quantity: its key in the JSON, its column header, unit and format."""

    key: str
    header: str
    unit: str
    better: Better
    fmt: str = "{:,.0f}"

    def format(self, value: float) -> str:
        return self.fmt.format(value)


@dataclass(slots=True)
class Measurement:
    """The runs of one figure of one row."""

    runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def low(self) -> float:
        return min(self.runs)

    @property
    def high(self) -> float:
        return max(self.runs)


@dataclass(slots=True)
class RowResult:
    """One row of a section: its figures, or the error that stopped it."""

    key: str
    label: str
    values: dict[str, Measurement] = field(default_factory=dict)
    error: str | None = None
    error_kind: str | None = None
    """``"coalesce-unsupported"`` when the clients take no ``coalesce=`` yet, else ``"error"``."""
    note: str | None = None
    versus: str | None = None
    """The key of the row this one is compared with, round by round."""
    details: dict[str, Any] | None = None
    """More about how the figures were found (JSON-ready), written to the JSON as it is."""

    def fail(self, error: BaseException, kind: str = "error") -> None:
        """Record ``error`` as the row's outcome; figures measured before it are dropped."""
        self.values.clear()
        self.error = f"{type(error).__name__}: {error}".splitlines()[0]
        self.error_kind = kind


@dataclass(slots=True)
class Section:
    """One scenario's table: every row measured the same figures."""

    key: str
    title: str
    figures: tuple[Figure, ...]
    rows: list[RowResult]
    baseline: str = "baseline"
    notes: list[str] = field(default_factory=list)
    """Lines printed under the section's table (and kept in the JSON)."""

    def ratio(self, row: RowResult, figure: Figure) -> float | None:
        """``row / baseline`` for ``figure``, when both were measured (and the baseline is
        not 0)."""
        base = next((r for r in self.rows if r.key == self.baseline), None)
        if base is None or figure.key not in base.values or figure.key not in row.values:
            return None
        denominator = base.values[figure.key].median
        return row.values[figure.key].median / denominator if denominator else None

    def paired(self, row: RowResult, figure: Figure) -> Measurement | None:
        """``row / row.versus`` for ``figure``, round by round: the ratio of the runs taken in
        the same round (next to each other in time), so the machine's drift cancels out."""
        other = next((r for r in self.rows if r.key == row.versus), None)
        if other is None or figure.key not in row.values or figure.key not in other.values:
            return None
        mine, theirs = row.values[figure.key].runs, other.values[figure.key].runs
        if len(mine) != len(theirs) or not all(theirs):
            return None
        return Measurement([a / b for a, b in zip(mine, theirs, strict=True)])

    @property
    def better(self) -> str:
        kinds = {figure.better for figure in self.figures}
        return f"{kinds.pop()} is better" if len(kinds) == 1 else "see each figure"


def to_json(meta: dict[str, Any], sections: Sequence[Section]) -> dict[str, Any]:
    """The whole result as JSON-ready data: ``{"meta": ..., "scenarios": {key: ...}}``."""
    scenarios: dict[str, Any] = {}
    for section in sections:
        rows = []
        for row in section.rows:
            figures = {}
            for figure in section.figures:
                measured = row.values.get(figure.key)
                if measured is None:
                    continue
                figures[figure.key] = {
                    "median": measured.median,
                    "min": measured.low,
                    "max": measured.high,
                    "runs": measured.runs,
                    "ratio": section.ratio(row, figure),
                }
                if (paired := section.paired(row, figure)) is not None:
                    figures[figure.key]["versus"] = {
                        "row": row.versus,
                        "median": paired.median,
                        "min": paired.low,
                        "max": paired.high,
                        "ratios": paired.runs,
                    }
            rows.append(
                {
                    "key": row.key,
                    "label": row.label,
                    "figures": figures,
                    "error": row.error,
                    "error_kind": row.error_kind,
                    "note": row.note,
                }
            )
            if row.details is not None:
                rows[-1]["details"] = row.details
        scenarios[section.key] = {
            "title": section.title,
            "baseline": section.baseline,
            "figures": [
                {"key": f.key, "header": f.header, "unit": f.unit, "better": f.better}
                for f in section.figures
            ],
            "rows": rows,
        }
        if section.notes:
            scenarios[section.key]["notes"] = section.notes
    return {"meta": meta, "scenarios": scenarios}


def _cells(section: Section, row: RowResult, figure: Figure) -> list[str]:
    measured = row.values.get(figure.key)
    if measured is None:
        return ["-", "", ""]
    spread = (
        f"{figure.format(measured.low)}-{figure.format(measured.high)}"
        if len(measured.runs) > 1
        else "(1 run)"
    )
    ratio = section.ratio(row, figure)
    return [figure.format(measured.median), spread, "-" if ratio is None else f"{ratio:.2f}x"]


def _render_section(section: Section, figures: Sequence[Figure], title: str) -> Iterator[str]:
    yield title
    header = ["row"]
    for figure in figures:
        header += [figure.header, "min-max", "/ base"]
    lines: list[list[str] | str] = [header]
    notes: list[str] = []
    for row in section.rows:
        label = row.label
        if row.note:
            if row.note not in notes:
                notes.append(row.note)
            label += " " + "*" * (notes.index(row.note) + 1)
        if row.error is not None:
            lines.append(f"{label}|ERROR ({row.error_kind}): {row.error}")
            continue
        cells = [label]
        for figure in figures:
            cells += _cells(section, row, figure)
        lines.append(cells)
    table = [line for line in lines if isinstance(line, list)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in lines:
        if isinstance(line, str):
            label, _, message = line.partition("|")
            yield f"  {label.ljust(widths[0])}  {message}"
            continue
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        yield "  " + "  ".join(cells).rstrip()
    for index, note in enumerate(notes, 1):
        yield f"  {'*' * index} {note}"


def _render_paired(sections: Sequence[Section]) -> Iterator[str]:
    lines = []
    for section in sections:
        for row in section.rows:
            for figure in section.figures:
                paired = section.paired(row, figure)
                if paired is not None:
                    what = f"{section.key} {figure.header}"
                    spread = f"{paired.low:.2f}-{paired.high:.2f}x"
                    lines.append(
                        [what, f"{row.key} / {row.versus}", f"{paired.median:.2f}x", spread]
                    )
    if not lines:
        return
    yield (
        "Paired: a row / the row it is compared with, in the same round (median of the"
        " per-round ratios, their min-max)"
    )
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    for line in lines:
        cells = [line[0].ljust(widths[0]), line[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(line[2:], widths[2:], strict=True)]
        yield "  " + "  ".join(cells).rstrip()


def render(sections: Sequence[Section], header: Sequence[str]) -> str:
    """The report as text: ``header`` lines, then one table per section (figures two by two),
    then the paired comparisons."""
    out = [*header, ""]
    for section in sections:
        for start in range(0, len(section.figures), 2):
            figures = section.figures[start : start + 2]
            title = section.title
            if len(section.figures) > 2:
                title += f" [{', '.join(figure.header for figure in figures)}]"
            out += [*_render_section(section, figures, f"{title}; {section.better}"), ""]
        if section.notes:
            out += [*(f"  {line}" for line in section.notes), ""]
    out += [*_render_paired(sections), ""]
    return "\n".join(out).rstrip() + "\n"
