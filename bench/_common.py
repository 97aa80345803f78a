"""Shared helpers of the benchmarks: percentiles and a plain-text table."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarise(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p90": percentile(values, 90),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "min": min(values),
        "max": max(values),
    }


def print_table(title: str, rows: dict[str, dict[str, float]], unit: str = "s") -> None:
    print(f"\n{title}")
    header = f"{'':<48}{'n':>5}{'p50':>10}{'p90':>10}{'p95':>10}{'p99':>10}{'min':>10}{'max':>10}"
    print(header)
    print("-" * len(header))
    for name, stats in rows.items():
        print(
            f"{name:<48}{stats['n']:>5}"
            + "".join(f"{stats[key]:>9.3f}{unit}" for key in ("p50", "p90", "p95", "p99", "min", "max"))
        )
