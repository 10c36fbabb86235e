"""What bench/run.py hands back: one row per scenario, the machine, and three files.

``results.md`` (the table and the machine), ``results.json`` (every round's raw numbers, the
options, the machine) and ``chart.png`` (each scenario's figure against its target) go into
``bench/results/<UTC timestamp>/``.

    .venv/bin/python bench/report.py bench/results/<UTC timestamp>

draws that folder's chart.png again from its results.json (nothing is measured).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal


class InvalidRun(Exception):
    """A run whose answers or accounting are not what the scenario claims: no figure."""


@dataclass(frozen=True)
class ChartPoint:
    """One bar: ``value`` (and its spread) against ``target``. ``better``: which side of the
    target meets it. "higher" bars are ratios to a reference; "lower" bars are a figure as a
    fraction of its limit (1.0 = the limit)."""

    better: Literal["higher", "lower"]
    value: float
    low: float
    high: float
    target: float


@dataclass
class Row:
    scenario: str
    figure: str = ""
    reference: str = ""
    ratio: str = "—"
    target: str = "—"
    met: bool | None = None  # None: no target (informational, or a limit)
    error: str = ""  # the run was invalid or failed: no figure
    chart: ChartPoint | None = None
    chart_label: str = ""

    @property
    def verdict(self) -> str:
        if self.error:
            return "invalid" if self.error.startswith("invalid") else "error"
        if self.met is None:
            return "—"
        return "met" if self.met else "**missed**"


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # scenario -> every round's numbers

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def ratio_text(values: Sequence[float], digits: int = 2) -> str:
    median, low, high = spread(values)
    return f"{median:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def number(value: float) -> str:
    """Thousands with a comma, no decimals: 12,345."""
    return f"{value:,.0f}"


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| scenario | figure | reference figure | ratio median [min-max] | target | |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        figure = row.error or row.figure
        cells = [row.scenario, figure, row.reference, row.ratio, row.target, row.verdict]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


# --- the machine -------------------------------------------------------------------------------


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else ""
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """The machine and the versions of what runs on it."""
    cpu = "unknown"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    redis = _first_line(["redis-server", "--version"])
    redis_version = re.search(r"v=(\S+)", redis)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "nginx": _first_line([nginx, "-v"]).removeprefix("nginx version: nginx/"),
        "redis": redis_version.group(1) if redis_version else redis,
        "wrk": _first_line(["wrk", "--version"]).split(" [")[0],
    }


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine_text(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory']}; {info['kernel']}; "
        f"Python {info['python']}, aiohttp {info['aiohttp']}, uvloop {info['uvloop']}, "
        f"nginx {info['nginx']}, Redis {info['redis']}, {info['wrk']}; load average "
        f"(1/5/15 min) at start {info['load_start']}, at end {info.get('load_end', '?')}"
    )


# --- the files ---------------------------------------------------------------------------------


def write(folder: Path, results: Results, info: dict[str, Any], options: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    markdown = (
        f"# paywall-gateway benchmark, {info['started']}\n\n"
        f"Command: `{options['command']}` ({info.get('seconds', 0) / 60:.1f} minutes)\n\n"
        f"Machine: {machine_text(info)}\n\n"
        f"{table(results.rows)}\n\n"
        "Ratios: each round runs the scenario and its reference back to back (A B, A B, ...); "
        "the ratio of each round is taken, and the median and the smallest and largest "
        "of them are shown.\n"
    )
    (folder / "results.md").write_text(markdown, encoding="utf-8")
    document = {
        "machine": info,
        "options": options,
        "rows": [asdict(row) | {"verdict": row.verdict} for row in results.rows],
        "raw": results.raw,
    }
    (folder / "results.json").write_text(
        json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8"
    )


def chart(folder: Path, rows: Sequence[Row], title: str) -> Path | None:
    """chart.png: one bar per scenario with a target, the target marked; None without
    matplotlib (``make bench`` installs it: the ``bench`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels: list[tuple[str, list[Row]]] = [
        ("Throughput against its reference (higher is better)", []),
        ("Figure as a fraction of its limit (lower is better)", []),
    ]
    for row in rows:
        if row.chart is not None and not row.error:
            panels[0 if row.chart.better == "higher" else 1][1].append(row)
    widths = [max(1, len(p[1])) for p in panels]
    figure, axes = plt.subplots(
        1, 2, figsize=(14, 6.5), gridspec_kw={"width_ratios": widths}, constrained_layout=True
    )
    for axis, (heading, chosen) in zip(axes, panels, strict=True):
        axis.set_title(heading, fontsize=11)
        lower = chosen is panels[1][1]
        floor = 0.11  # the log scale cannot show 0: a figure of 0 is a stub above the axis
        for x, row in enumerate(chosen):
            point = row.chart
            assert point is not None
            value, low, high = (
                max(v, floor) if lower else v for v in (point.value, point.low, point.high)
            )
            colour = {True: "#3a7d44", False: "#c0392b", None: "#8c8c8c"}[row.met]
            axis.bar(x, value, width=0.6, color=colour, alpha=0.85)
            axis.errorbar(
                x,
                value,
                yerr=[[value - low], [high - value]],
                color="black",
                capsize=4,
                linewidth=1,
            )
            if row.met is not None:  # informational rows have no target
                axis.hlines(point.target, x - 0.42, x + 0.42, colors="black", linestyles="--")
            axis.annotate(
                f"{point.value:.2f}",
                (x, high),
                textcoords="offset points",
                xytext=(0, 4),
                ha="center",
                fontsize=8,
            )
        axis.set_xticks(range(len(chosen)))
        axis.set_xticklabels(
            [row.chart_label or row.scenario for row in chosen], rotation=30, ha="right", fontsize=8
        )
        if lower:
            axis.set_yscale("log")
            axis.set_ylim(bottom=0.1)
        else:
            axis.set_ylim(bottom=0)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("ratio (bar: median; whiskers: min-max of the rounds; dashed: target)")
    axes[1].set_ylabel("figure / limit, log scale (dashed: the limit, 1.0)")
    figure.suptitle(title, fontsize=12)
    path = folder / "chart.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def redraw(folder: Path) -> Path | None:
    """chart.png of ``folder`` again, from its results.json."""
    document = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    rows = []
    for fields in document["rows"]:
        fields = {k: v for k, v in fields.items() if k != "verdict"}
        point = fields.pop("chart")
        rows.append(Row(**fields, chart=ChartPoint(**point) if point else None))
    return chart(folder, rows, f"paywall-gateway, {document['machine']['started']}")


if __name__ == "__main__":
    import sys

    print(redraw(Path(sys.argv[1])))
