"""Print a benchmark's table and save it under bench/results/ as JSON and Markdown."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


@dataclass
class Row:
    metric: str
    ours: float
    baseline: float
    baseline_name: str
    unit: str
    better: str = "lower"  # or "higher"
    note: str = ""

    @property
    def ratio(self) -> float:
        """How many times better we are (> 1 is better), whichever direction is better."""
        if self.better == "lower":
            return self.baseline / self.ours if self.ours else float("inf")
        return self.ours / self.baseline if self.baseline else float("inf")


@dataclass
class Report:
    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    extra_md: str = ""
    # file name -> function that draws the figure into that path
    figures: dict[str, Callable[[Path], None]] = field(default_factory=dict)

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.rows.append(Row(*args, **kwargs))

    def table(self) -> str:
        head = "| metric | ours | baseline | baseline value | ratio (×better) | note |"
        lines = [f"### {self.title}", "", head, "|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(
                f"| {r.metric} | {r.ours:.4g} {r.unit} | {r.baseline_name} | "
                f"{r.baseline:.4g} {r.unit} | {r.ratio:.3g} | {r.note} |"
            )
        if self.extra_md:
            lines += ["", self.extra_md]
        return "\n".join(lines)

    def save(self, out: Path = RESULTS) -> None:
        out.mkdir(parents=True, exist_ok=True)
        data = {
            "name": self.name,
            "title": self.title,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {
                "python": platform.python_version(),
                "cpu": platform.processor(),
                "cores": __import__("os").cpu_count(),
            },
            "rows": [{**r.__dict__, "ratio": r.ratio} for r in self.rows],
            "extra": self.extra,
        }
        (out / f"{self.name}.json").write_text(json.dumps(data, indent=2) + "\n")
        (out / f"{self.name}.md").write_text(self.table() + "\n")
        for name, draw in self.figures.items():
            draw(out / name)

    def show(self) -> None:
        print()
        print(self.table(), flush=True)
