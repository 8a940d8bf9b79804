"""Draws the cost curve that loadtest/cost-curve.sh measured: events/s, resident bytes per customer and restart
time, against the customers (at the most common merchant count) and against the merchants (at 1 M customers).

Usage: python3 loadtest/plot_cost_curve.py [docs/cost-curve.csv] [docs/cost-curve.svg]
Needs matplotlib (pip install matplotlib).
"""

import csv
import sys
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)


def load(path):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def series(rows, fixed_key, fixed_value, along):
    chosen = sorted((r for r in rows if r[fixed_key] == fixed_value), key=lambda r: r[along])
    return [r[along] for r in chosen], chosen


def draw(rows, out):
    merchants_common = Counter(r["merchants"] for r in rows).most_common(1)[0][0]
    panels = [
        ("events_per_second", "catch-up events/s"),
        ("rss_total_bytes_per_customer", "resident bytes per customer"),
        ("restart_seconds", "restart after a graceful stop (s)"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for row, (fixed_key, fixed_value, along, label) in enumerate(
        [
            ("merchants", merchants_common, "customers", f"customers ({int(merchants_common)} merchants)"),
            ("customers", 1_000_000, "merchants", "merchants (1 M customers)"),
        ]
    ):
        xs, chosen = series(rows, fixed_key, fixed_value, along)
        for col, (key, title) in enumerate(panels):
            ax = axes[row][col]
            ax.plot(xs, [r[key] for r in chosen], marker="o")
            if key == "rss_total_bytes_per_customer":
                ax.lines[-1].set_label("bench process")
                ax.plot(xs, [r["restarted_rss_bytes_per_customer"] for r in chosen], marker="v", label="restarted instance")
                ax.plot(xs, [r["rss_growth_bytes_per_customer"] for r in chosen], marker="^", label="bench growth")
                ax.plot(xs, [r["state_bytes_per_customer"] for r in chosen], marker="s", label="engine state")
                ax.axhline(250, color="grey", linestyle="--", label="target 250 B")
                ax.set_yscale("log")
                ax.legend(fontsize="small")
            if key == "restart_seconds":
                ax.axhline(5, color="grey", linestyle="--", label="target 5 s")
                ax.legend()
            if ax.get_yscale() == "linear":
                ax.set_ylim(bottom=0)
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("LoyalNest RFM Stream: one processor instance, 2 cores shared with Tansu and Redis")
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    source = sys.argv[1] if len(sys.argv) > 1 else "docs/cost-curve.csv"
    target = sys.argv[2] if len(sys.argv) > 2 else "docs/cost-curve.svg"
    draw(load(source), target)
    print(f"wrote {target}")
