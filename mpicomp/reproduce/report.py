"""A claim's report: ``report.md`` (quantity | paper | ours | verdict, then the known differences),
``outcome.json`` (the same as data), and the generated tables of ``docs/reproductions.md``."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .engine import FIGURE, NOT_RUN, OUTCOME, REPORT, Outcome, Row

DOCS_BEGIN = "<!-- reproduce: generated tables begin (mpicomp reproduce --write-docs) -->"
DOCS_END = "<!-- reproduce: generated tables end -->"


def number(value: float) -> str:
    """Four significant digits; ``n/a`` for NaN."""
    return "n/a" if not math.isfinite(value) else f"{value:.4g}"


def _paper(row: Row) -> str:
    paper = row.quantity.paper
    shown = "—" if paper is None else number(paper) if isinstance(paper, float) else paper
    return f"{shown} ({row.quantity.source})"


def _ours(row: Row) -> str:
    text = number(row.value)
    if math.isfinite(row.spread):
        text += f" ± {row.spread:.2g}"
    if row.runs > 1:
        text += f" ({row.runs} runs)"
    return text + (f"; {row.note}" if row.note else "")


def verdict_cell(row: Row) -> str:
    """The verdict column: the rule and its verdict, ``— (context)`` without a rule, or the modes it is judged in."""
    rule = row.quantity.rule
    if rule is None:
        return "— (context)"
    if not row.verdict:
        return f"— ({' and '.join(rule.modes)} mode only: ours {rule.describe()})"
    reference = f" = {number(row.reference)}" if isinstance(rule.than, str) or rule.times != 1.0 else ""
    return f"{row.verdict}: ours {rule.describe()}{reference}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(outcome: Outcome) -> str:
    """The markdown table of the claim's quantities."""
    lines = ["| quantity | paper | ours | verdict |", "|---|---|---|---|"]
    for row in outcome.rows:
        cells = (row.quantity.label, _paper(row), _ours(row), verdict_cell(row))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def body(outcome: Outcome, level: int = 2) -> str:
    """The claim's section: verdict, what it compares, the table, the known differences."""
    claim = outcome.claim
    hashes = "#" * level
    verdict = outcome.verdict + (f": {outcome.why}" if outcome.why else "")
    parts = [
        f"{hashes} {claim.name}: {claim.title}",
        f"**Verdict ({outcome.mode_text}): {verdict}**\n\n{claim.paper}, {claim.figure}. Compared: {claim.compares}.",
    ]
    if outcome.rows:
        parts.append(table(outcome))
    parts.append(f"{hashes}# Known differences\n\n{claim.differences}")
    return "\n\n".join(parts)


def write_outcome(outcome: Outcome, folder: Path) -> None:
    """``folder/report.md`` and ``folder/outcome.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    claim = outcome.claim
    extra = []
    if outcome.runs:
        extra.append(
            f"Runs: {len(outcome.runs)} results files in `{outcome.runs_name}/` "
            f"(`mpicomp compare {folder / outcome.runs_name}`)."
        )
    if outcome.figure is not None:
        extra.append(f"![{claim.name}]({FIGURE})")
    cap = "" if outcome.cap is None else f" --max-rounds {outcome.cap.rounds}"
    command = f"Reproduce: `mpicomp reproduce {claim.name} --{outcome.mode}{cap} --out {folder.parent}`"
    text = "\n\n".join([body(outcome, 1), *extra, command]) + "\n"
    (folder / REPORT).write_text(text, encoding="utf-8")
    (folder / OUTCOME).write_text(json.dumps(as_data(outcome), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def as_data(outcome: Outcome) -> dict[str, Any]:
    """The outcome as JSON-ready data (NaN as null)."""
    claim = outcome.claim
    return {
        "claim": claim.name,
        "paper": claim.paper,
        "figure": claim.figure,
        "title": claim.title,
        "mode": outcome.mode,
        "rounds_capped": None if outcome.cap is None else dataclasses.asdict(outcome.cap),
        "verdict": outcome.verdict,
        "why": outcome.why,
        "rows": [
            {
                "id": row.quantity.id,
                "label": row.quantity.label,
                "paper": row.quantity.paper,
                "source": row.quantity.source,
                "ours": _finite(row.value),
                "spread": _finite(row.spread),
                "runs": row.runs,
                "rule": None if row.quantity.rule is None else row.quantity.rule.describe(),
                "reference": _finite(row.reference),
                "verdict": row.verdict,
                "note": row.note,
            }
            for row in outcome.rows
        ],
    }


def write_docs(path: Path, outcomes: Sequence[Outcome]) -> None:
    """Put the outcomes' sections into the generated part of ``path`` (between :data:`DOCS_BEGIN` and
    :data:`DOCS_END`): a claim's section is replaced, the other claims' sections stay (each says its
    mode), all in name order; a claim that was not run (its data missing) keeps the section it has.
    ValueError if the markers are missing."""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: no generated section (the lines {DOCS_BEGIN!r} and {DOCS_END!r})")
    sections = _claim_sections(text[start + len(DOCS_BEGIN) : end])
    sections.update(
        {
            outcome.claim.name: body(outcome, 3)
            for outcome in outcomes
            if outcome.verdict != NOT_RUN or outcome.claim.name not in sections
        }
    )
    header = (
        "Generated by `mpicomp reproduce --quick|--full --write-docs FILE` (each section says the mode it ran in; "
        "a run of some claims replaces only their sections)."
    )
    generated = "\n\n".join([DOCS_BEGIN, header, *(sections[name] for name in sorted(sections))])
    path.write_text(text[:start] + generated + "\n\n" + text[end:], encoding="utf-8")


def _claim_sections(generated: str) -> dict[str, str]:
    """The claims' sections of a generated part, by name: each from its ``### NAME: title`` line to the next."""
    starts = [m for m in re.finditer(r"^### ([\w.-]+): ", generated, flags=re.MULTILINE)]
    ends = [m.start() for m in starts[1:]] + [len(generated)] if starts else []
    return {m.group(1): generated[m.start() : stop].strip() for m, stop in zip(starts, ends, strict=True)}
