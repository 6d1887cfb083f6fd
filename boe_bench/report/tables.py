"""Paper-layout tables: the paper's rows, task x length as columns, ours beside the paper's.

Every number of ours carries its 95% interval (``intervals.py``); a cell where the paper's
number lies outside our interval is flagged with a dagger. A second table compares BoE
with every other row on the examples both ran (paired test, p-value).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from boe_bench.report import intervals
from boe_bench.report.stats import outside

MISSING = "–"
FLAG = "†"
# Numbers the report shows beside a task's primary metric besides ``Task.table_metrics``:
# Sudoku's solve rate (the paper's text says "solve rate", d1's protocol reports cell
# accuracy; the report compares the paper's number with cell accuracy and shows both).
REPORT_METRICS = {"sudoku": (("solved", "solve rate", "max"),)}
# Secondary metrics that are rates: printed in percent like the primary metric.
PERCENT_METRICS = {"solved"}


def rank_marks(column: pd.Series, better: str | None = "max") -> dict:
    """Row -> 'best' / 'second' among the non-missing cells of a column (``better``: "max" or
    "min"; None marks nothing). A place held by several rows is a tie and marks none of them
    (a column of equal scores, e.g. all 0 on a random model, has no bold cell)."""
    if better is None:
        return {}
    cells = column.dropna().round(6)
    values = sorted(set(cells), reverse=better == "max")
    labels = dict(zip(values, ("best", "second")))
    held = cells.value_counts()
    return {row: labels[value] for row, value in cells.items() if value in labels and held[value] == 1}


def column_key(task: str, gen_length, steps, with_steps: bool) -> str:
    return f"{task}@{int(gen_length)}" + (f"/s{int(steps)}" if with_steps else "")


def secondary_metrics(task: str) -> tuple[tuple[str, str, str | None], ...]:
    """What the report shows beside a task's primary metric (Task.table_metrics, then ours)."""
    from boe_bench.tasks import TASKS

    own = TASKS.get(task).table_metrics if task in TASKS else ()
    return (*own, *REPORT_METRICS.get(task, ()))


def scale(key: str) -> float:
    return 100.0 if key in PERCENT_METRICS else 1.0


def with_columns(frame: pd.DataFrame) -> pd.DataFrame:
    with_steps = bool(frame.groupby(["task", "gen_length", "row"])["steps"].nunique().gt(1).any()) if len(frame) else False
    return frame.assign(column=[column_key(t, g, s, with_steps) for t, g, s in
                                zip(frame["task"], frame["gen_length"], frame["steps"])])


def value_columns(frame: pd.DataFrame) -> list[tuple[str, str, str, float, str | None]]:
    """(task, table column suffix, frame value column, scale, better direction) per metric
    shown: the primary metric (suffix "") in percent, then each secondary metric recorded."""
    shown = [(task, "", "score", 100.0, "max") for task in frame["task"].unique()]
    for task, runs in frame.groupby("task"):
        for key, label, direction in secondary_metrics(task):
            values = f"metric:{key}"
            if values in runs and not runs[values].isna().all():
                shown.append((task, f" {label}", values, scale(key), direction))
    return shown


def grid(frame: pd.DataFrame, paper: pd.DataFrame, axes: dict, rows: list[str]):
    """(ours, lower, upper) as row x column frames, the paper's numbers by (row, column), the
    row order, and each column's better direction."""
    frame = with_columns(frame)
    with_steps = any("/s" in c for c in frame["column"])
    pieces, lows, highs, better = [], [], [], {}
    for task, suffix, values, factor, direction in value_columns(frame):
        runs = frame[frame["task"] == task].assign(column=lambda f: f["column"] + suffix)
        for target, column in ((pieces, values), (lows, f"{values}_lo"), (highs, f"{values}_hi")):
            data = runs[column] if column in runs else pd.Series(np.nan, index=runs.index)
            target.append(runs.assign(value=factor * data.astype(float))
                          .pivot_table(index="row", columns="column", values="value", aggfunc="mean", dropna=False))
        better.update({c: direction for c in runs["column"]} if suffix else {})
    ours, lower, upper = (pd.concat(p, axis=1) if p else pd.DataFrame() for p in (pieces, lows, highs))
    scores = paper[paper["metric"] != "runtime"]
    reference = {(r.row, paper_column(r)): float(r.value) for r in scores.itertuples()}
    order = list(dict.fromkeys([*rows, *ours.index, *(s for s, _ in reference)]))

    def numeric_order(column: str):
        base, _, label = column.partition(" ")
        task, rest = base.split("@")
        return (task, *(int(part.lstrip("s")) for part in rest.split("/")), label)

    columns = sorted(ours.columns, key=numeric_order)
    if not with_steps:
        lengths = axes.get("gen_length") or sorted({int(g) for g in frame["gen_length"]}) or []
        expected = [column_key(t, g, 0, False) for t in axes.get("task", []) for g in lengths]
        columns = list(dict.fromkeys([*expected, *columns, *(c for _, c in reference)]))
    shaped = [f.reindex(index=order, columns=columns) for f in (ours, lower, upper)]
    return (*shaped, reference, order, better)


def paper_column(row) -> str:
    """The column a paper number belongs in: its task's secondary column if it names one."""
    base = column_key(row.task, row.gen_length, 0, False)
    labels = {key: label for key, label, _ in secondary_metrics(row.task)}
    return f"{base} {labels[row.metric]}" if row.metric in labels else base


def number(value, digits: int) -> str:
    return MISSING if pd.isna(value) else f"{value:.{digits}f}"


def cell_text(value, low, high, reference, digits: int = 1) -> str:
    """``ours [low, high]``, then ``(paper, ours - paper)`` and a dagger when the paper's
    number lies outside our interval."""
    text = number(value, digits)
    if not pd.isna(low) and not pd.isna(high):
        text += f" [{number(low, digits)}, {number(high, digits)}]"
    if reference is not None:
        text += f" ({reference:.{max(digits, 1)}f}, {MISSING if pd.isna(value) else f'{value - reference:+.{digits}f}'})"
        if intervals_flag(reference, low, high):
            text += FLAG
    return text


def intervals_flag(reference: float, low, high) -> bool:
    return not pd.isna(low) and not pd.isna(high) and outside(reference, (float(low), float(high)))


def pooled(frame: pd.DataFrame, found: dict, key: str) -> dict:
    """Per row, the mean of ``key`` (nfe, cost) over every example of the row's runs, with its
    bootstrap interval."""
    out = {}
    for row, runs in frame.groupby("row"):
        parts = [found.get(p, {}).get(key) for p in runs["path"]]
        parts = [e for e in parts if e is not None]
        if not parts:
            mean = (runs[key] * runs["n"]).sum() / runs["n"].sum() if runs["n"].sum() else np.nan
            out[row] = (mean, np.nan, np.nan)
            continue
        joined = intervals.Estimator("mean", [f"{k}:{i}" for k, e in enumerate(parts) for i in e.ids],
                                     {"x": np.concatenate([e.data["x"] for e in parts])})
        out[row] = (joined.value(), *joined.interval())
    return out


def runtime_columns(frame: pd.DataFrame, paper: pd.DataFrame, rows: list[str]) -> tuple[dict, dict]:
    """Per row: wall-clock hours (ours, and the paper's in parentheses) and the ratio to the
    Confidence row's runtime (ours, and the paper's), since hours depend on the machine."""
    hours = frame.groupby("row")["wall_s"].sum() / 3600
    runtime = {r.row: float(r.value) for r in paper[paper["metric"] == "runtime"].itertuples()}
    confidence = next((r for r in rows if r in set(frame.loc[frame["sampler"] == "confidence", "row"])), None)
    paper_confidence = next((r.row for r in paper[paper["metric"] == "runtime"].itertuples()
                             if r.sampler == "confidence"), None)
    wall, ratio = {}, {}
    for row in rows:
        ours = hours.get(row, np.nan)
        wall[row] = (MISSING if pd.isna(ours) else f"{ours:.3g}") + (f" ({runtime[row]:.2f})" if row in runtime else "")
        text = MISSING if confidence is None or pd.isna(ours) else f"{ours / hours[confidence]:.2f}x"
        if paper_confidence is not None and row in runtime:
            text += f" ({runtime[row] / runtime[paper_confidence]:.2f}x)"
        ratio[row] = text
    return wall, ratio


def table(frame: pd.DataFrame, paper: pd.DataFrame, axes: dict, rows: list[str] | None = None,
          found: dict | None = None, ranked: bool = True) -> tuple[str, str]:
    """Markdown and LaTeX; ours in percent with [95% interval], then (paper, ours - paper) and
    a dagger where the paper's number is outside our interval; secondary metrics (Table 4's Gen
    PPL, entropy; Sudoku's solve rate) beside; best bold, second underlined per column, by the
    column's direction; NFE and cost (mean per example [95%]), wall-clock and its ratio to
    Confidence per row. ``ranked=False`` marks no cell (numbers that are noise rank nothing)."""
    found = found or {}
    if "row" not in frame:
        frame = frame.assign(row=frame["sampler"])
    scores, lower, upper, reference, order, better = grid(frame, paper, axes, rows or axes.get("sampler", []))
    nfe, cost = pooled(frame, found, "nfe"), pooled(frame, found, "cost")
    wall, ratio = runtime_columns(frame, paper, order)
    marks = {c: rank_marks(scores[c], better.get(c, "max") if ranked else None) for c in scores.columns}
    md_rows, tex_rows = [], []
    for row in order:
        md, tex = [row], [row.replace("_", "\\_")]
        for column in scores.columns:
            digits = 2 if column in better and not column.endswith("solve rate") else 1
            text = cell_text(scores.loc[row, column], lower.loc[row, column], upper.loc[row, column],
                             reference.get((row, column)), digits)
            mark = marks[column].get(row)
            md.append(f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text)
            tex_text = text.replace(MISSING, "--").replace(FLAG, "$^\\dagger$")
            tex.append(f"\\textbf{{{tex_text}}}" if mark == "best" else
                       f"\\underline{{{tex_text}}}" if mark == "second" else tex_text)
        extra = [cell_text(*source.get(row, (np.nan, np.nan, np.nan)), None) for source in (nfe, cost)]
        extra += [wall[row], ratio[row]]
        md_rows.append("| " + " | ".join(md + extra) + " |")
        tex_rows.append(" & ".join(tex + [e.replace(MISSING, "--") for e in extra]) + " \\\\")
    header = ["row", *scores.columns, "NFE", "cost (fwd)", "wall h", "wall / Confidence"]
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *md_rows])
    latex = "\n".join([f"\\begin{{tabular}}{{l{'c' * (len(header) - 1)}}}", "\\toprule",
                       " & ".join(h.replace("_", "\\_").replace("@", " L=") for h in header) + " \\\\",
                       "\\midrule", *tex_rows, "\\bottomrule", "\\end{tabular}"])
    return markdown, latex


def missing(value) -> bool:
    return value is None or pd.isna(value)


def signed_interval(result: dict, factor: float, digits: int) -> str:
    """``[lo, hi]`` of a paired difference, or ``[–]`` where there is none (fewer than two
    paired examples): never ``[nan, nan]``."""
    if missing(result.get("lo")) or missing(result.get("hi")):
        return f"[{MISSING}]"
    return f"[{factor * result['lo']:+.{digits}f}, {factor * result['hi']:+.{digits}f}]"


def paired_table(frame: pd.DataFrame, found: dict, rows: list[str]) -> str | None:
    """BoE minus each other row, per column, on the examples both ran: difference [95% paired
    bootstrap interval] and p (McNemar exact for 0/1 outcomes, else the paired bootstrap's).
    None when no BoE run has a partner."""
    if "row" not in frame:
        frame = frame.assign(row=frame["sampler"])
    frame = with_columns(frame)
    boe = frame[frame["sampler"] == "boe"]
    if boe.empty:
        return None
    cells: dict[tuple[str, str], str] = {}
    columns = []
    for _, target in boe.iterrows():
        keys = [(target["metric"], "", 100.0)] + [
            (key, f" {label}", scale(key)) for key, label, _ in secondary_metrics(target["task"])]
        partners = frame[(frame["column"] == target["column"]) & (frame["row"] != target["row"])]
        for key, suffix, factor in keys:
            mine = found.get(target["path"], {}).get(key)
            if mine is None:
                continue
            column = target["column"] + suffix
            for _, other in partners.iterrows():
                theirs = found.get(other["path"], {}).get(key)
                result = intervals.compare(mine, theirs) if theirs is not None else None
                if result is None:
                    continue
                digits = 1 if factor == 100.0 else 2
                cells[(other["row"], column)] = (
                    f"{factor * result['delta']:+.{digits}f} {signed_interval(result, factor, digits)} "
                    f"p={MISSING if missing(result.get('p')) else format(result['p'], '.2g')}"
                    + (f" ({result['only_a']}/{result['only_b']})" if "only_a" in result else ""))
                columns.append(column)
    if not cells:
        return None
    columns = list(dict.fromkeys(columns))
    order = [r for r in dict.fromkeys([*rows, *frame["row"]]) if any((r, c) in cells for c in columns)]
    lines = ["| BoE minus | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    lines += ["| " + " | ".join([row, *(cells.get((row, c), MISSING) for c in columns)]) + " |" for row in order]
    return "\n".join(lines)
