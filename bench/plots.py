"""
SVG bar charts of a benchmark report, drawn from its figures by
C{python -m bench} (and C{--render}) beside C{RESULTS.md}:

 - L{RATIOS} (C{plots/ratios.svg}): agilerpc's same-repeat ratio to bare,
   AMP, agileutil and grpcio for every figure of the table that has one;
   throughput figures (higher is better for agilerpc) and cost figures
   (latency, time per MiB, memory, CPU: lower is better) in two panels.
 - L{LATENCY} (C{plots/latency.svg}): p50 and p99 latency of each system in
   scenario A (Deferred clients, grpcio's channel) and A' (blocking clients).

The paths are stable: the documentation embeds these files.  matplotlib is
imported only when drawing (the C{bench} extra installs it); the SVG output
is deterministic for a given report and matplotlib (fixed hash salt, no
date, text kept as text).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

#: Where the charts go, relative to the directory of RESULTS.md.
RATIOS = "plots/ratios.svg"
LATENCY = "plots/latency.svg"

#: Their titles, as RESULTS.md shows them.
TITLES = {
    os.path.basename(RATIOS): "agilerpc's same-run ratio to each peer",
    os.path.basename(LATENCY): "p50 and p99 latency per system, A and A'",
}

_NAMES = {
    "agilerpc": "agilerpc",
    "bare": "bare",
    "amp": "AMP",
    "agileutil": "agileutil",
    "grpcio": "grpcio",
}
_COLOURS = {
    "agilerpc": "#4c72b0",
    "bare": "#8c8c8c",
    "amp": "#dd8452",
    "agileutil": "#55a868",
    "grpcio": "#c44e52",
}
_PEERS = ("bare", "amp", "agileutil", "grpcio")

_STYLE = {
    # Deterministic output: the same ids on every run, no timestamp (below),
    # text left as text instead of paths of glyphs.
    "svg.hashsalt": "agilerpc-bench",
    "svg.fonttype": "none",
    "font.size": 9,
}
_METADATA = {"Date": None, "Creator": None}


def writePlots(report: dict[str, Any], directory: str) -> list[str]:
    """
    Draw L{RATIOS} and L{LATENCY} from C{report} (what C{python -m bench}
    writes to results.json) under C{directory}; their paths relative to it.

    @raise ImportError: if matplotlib is not installed.
    """
    # The typing environment need not have matplotlib (the bench extra).
    import matplotlib  # type: ignore[import-not-found,unused-ignore]
    from matplotlib.figure import (  # type: ignore[import-not-found,unused-ignore]
        Figure,
    )

    written = []
    with matplotlib.rc_context(_STYLE):
        for relative, draw in ((RATIOS, _drawRatios), (LATENCY, _drawLatency)):
            figure = Figure()
            draw(figure, report["table"])
            path = os.path.join(directory, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            figure.savefig(path, format="svg", metadata=_METADATA)
            written.append(relative)
    return written


def _lowerIsBetter(row: dict[str, Any]) -> bool:
    return bool(row["metric"] != "calls_per_s")


def _drawRatios(figure: Any, table: Sequence[dict[str, Any]]) -> None:
    panels = [
        (
            "throughput: agilerpc / peer (higher is better for agilerpc)",
            [r for r in table if not _lowerIsBetter(r) and _ratios(r)],
        ),
        (
            "cost: agilerpc / peer (lower is better for agilerpc)",
            [r for r in table if _lowerIsBetter(r) and _ratios(r)],
        ),
    ]
    heights = [max(1, len(rows)) for _, rows in panels]
    figure.set_size_inches(9, 1.2 + 0.42 * sum(heights))
    axes = figure.subplots(2, 1, gridspec_kw={"height_ratios": heights})
    width = 0.8 / len(_PEERS)
    for ax, (title, rows) in zip(axes, panels, strict=True):
        ax.set_title(title, loc="left")
        if not rows:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center")
            ax.set_axis_off()
            continue
        for i, peer in enumerate(_PEERS):
            ys, xs = [], []
            for j, row in enumerate(rows):
                value = row.get(f"agilerpc/{peer}")
                if value is not None and value > 0:
                    ys.append(j - 0.4 + width * (i + 0.5))
                    xs.append(value)
            ax.barh(
                ys,
                xs,
                height=width,
                color=_COLOURS[peer],
                label=f"agilerpc / {_NAMES[peer]}",
            )
            for y, x in zip(ys, xs, strict=True):
                ax.text(
                    x, y, f" {x:.2f}\N{MULTIPLICATION SIGN}", va="center", fontsize=7
                )
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([row["figure"] for row in rows])
        ax.invert_yaxis()
        ax.grid(axis="x", which="both", linewidth=0.3)
        ax.set_axisbelow(True)
    axes[0].legend(loc="lower right", fontsize=7)
    figure.tight_layout()


def _ratios(row: dict[str, Any]) -> list[float]:
    return [
        value
        for peer in _PEERS
        if (value := row.get(f"agilerpc/{peer}")) is not None and value > 0
    ]


def _latency(
    table: Sequence[dict[str, Any]], scenario: str, metric: str
) -> dict[str, Any]:
    for row in table:
        if row["scenario"] == scenario and row["metric"] == metric:
            return row
    return {}


def _drawLatency(figure: Any, table: Sequence[dict[str, Any]]) -> None:
    from matplotlib.patches import (  # type: ignore[import-not-found,unused-ignore]
        Patch,
    )

    panels = [
        ("A: sequential add(1, 2), Deferred clients and grpcio's channel", "seq"),
        ("A': sequential add(1, 2), blocking clients", "blocking"),
    ]
    figure.set_size_inches(9, 5.5)
    axes = figure.subplots(1, 2)
    for ax, (title, scenario) in zip(axes, panels, strict=True):
        p50 = _latency(table, scenario, "p50_us")
        p99 = _latency(table, scenario, "p99_us")
        systems = [
            impl
            for impl in _NAMES
            if p50.get(impl) is not None or p99.get(impl) is not None
        ]
        ax.set_title(title, loc="left", fontsize=9)
        if not systems:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center")
            ax.set_axis_off()
            continue
        for offset, (row, hatch) in enumerate(((p50, ""), (p99, "//"))):
            xs, heights, colours = [], [], []
            for i, impl in enumerate(systems):
                value = row.get(impl)
                if value is not None:
                    xs.append(i - 0.2 + 0.4 * offset)
                    heights.append(value)
                    colours.append(_COLOURS[impl])
            bars = ax.bar(
                xs,
                heights,
                width=0.4,
                color=colours,
                hatch=hatch,
                edgecolor="white",
            )
            ax.bar_label(bars, fmt="{:,.0f}", fontsize=7)
        ax.set_xticks(range(len(systems)))
        ax.set_xticklabels([_NAMES[impl] for impl in systems])
        ax.set_ylabel("µs per call (median over repeats)")
        ax.grid(axis="y", linewidth=0.3)
        ax.set_axisbelow(True)
        ax.legend(
            handles=[
                Patch(facecolor="#bbbbbb", label="p50"),
                Patch(facecolor="#bbbbbb", hatch="//", edgecolor="white", label="p99"),
            ],
            fontsize=7,
        )
    figure.tight_layout()
