"""Recommendations benchmark: the build's time, and the peers' precision side by side.

    ./dev bench recs [--runs 3] [--threads 1]
    ./dev bench recs --table [--interactions FILE ...] [--no-movielens] [--seed 42]

Build: ``compute`` (model selection, the chosen model's fit, every customer's list)
over the demo history, 1,000 customers x 200 products, against the yardstick measured
in the same run: the same build with the item-to-item model alone, which is what a
build did before model selection. Target: under 5 s.

Table: for MovieLens 100k (and each ``--interactions`` file), under both splits, with
and without ``--min-rating 4``: each peer's precision@10 (popularity, EASE, ALS,
item-kNN, item-to-item, each with the settings that validated best on the training
data) and the selected model's, and whether the selected one is at least the best peer.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from demo.people.catalogue import catalogue
from demo.people.population import population
from demo.recommendation_history import demo_history
from gateway.recommendations.interactions import Interaction
from gateway.recommendations.model import ModelParams
from gateway.recommendations.training.builder import GATEWAY_PARAMS, compute
from gateway.recommendations.training.datasets import movielens_100k, read_interactions
from gateway.recommendations.training.evaluation import evaluate
from gateway.recommendations.training.metrics import Split
from gateway.settings import load_settings

PEERS = ("popularity", "EASE", "ALS", "item-kNN", "item-to-item")


def bench_build(runs: int, threads: int) -> None:
    history = demo_history(population())
    categories = {str(p.id): p.category for p in catalogue().products}
    allowed = {x.user for x in history.interactions}
    items = len({x.item for x in history.interactions})
    print(
        f"build over {len(allowed):,} customers x {items} products "
        f"({len(history.interactions):,} interactions), {threads} thread(s), {runs} runs"
    )
    timings: dict[str, list[float]] = {"selection": [], "item-to-item only": []}
    # CPU seconds too: on a shared machine the wall clock measures the neighbours' load
    # as much as the build (it runs on one thread, so CPU time is its own work).
    cpu: dict[str, list[float]] = {"selection": [], "item-to-item only": []}
    label = ""
    for _ in range(runs):
        for name, families in (
            ("selection", ("popularity", "item_to_item", "ease", "als", "knn", "blend")),
            ("item-to-item only", ("item_to_item",)),
        ):
            started, used = time.perf_counter(), time.process_time()
            rows = compute(
                history, GATEWAY_PARAMS, categories, allowed, threads=threads, families=families
            )
            timings[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - used)
            if name == "selection":
                label = rows.label
    chosen = statistics.median(timings["selection"])
    yardstick = statistics.median(timings["item-to-item only"])
    chosen_cpu = statistics.median(cpu["selection"])
    yardstick_cpu = statistics.median(cpu["item-to-item only"])
    print(
        f"  with model selection  median {chosen:6.2f} s, CPU {chosen_cpu:6.2f} s  "
        f"(target < 5 s); chose {label}"
    )
    print(
        f"  item-to-item only     median {yardstick:6.2f} s, CPU {yardstick_cpu:6.2f} s  "
        "(yardstick: the build before)"
    )
    print(f"  ratio {chosen / yardstick:.1f}, in CPU time {chosen_cpu / yardstick_cpu:.1f}")


def _file_reader(path: Path) -> Callable[[float | None], list[Interaction]]:
    return lambda minimum: read_interactions(path, min_rating=minimum)


def bench_table(files: list[Path], movielens: bool, threads: int, seed: int = 42) -> None:
    sources: list[tuple[str, Callable[[float | None], list[Interaction]]]] = []
    if movielens:
        cache = load_settings().recs_data_dir
        sources.append(("MovieLens 100k", lambda m: movielens_100k(cache, min_rating=m)))
    for path in files:
        sources.append((path.name, _file_reader(path)))
    header = f"{'data set':<22}{'split':<8}{'min':>4}" + "".join(f"{p:>13}" for p in PEERS)
    print(header + f"{'selected':>10}  >= best peer  selected model")
    for title, read in sources:
        for how in ("random", "recent"):
            for minimum in (None, 4.0):
                started = time.perf_counter()
                report = evaluate(
                    read(minimum), ModelParams(), how=_split(how), seed=seed, threads=threads
                )
                figures = {row.name: row.metrics.precision for row in report.rows}
                best = max(figures[p] for p in PEERS if p in figures)
                shown = "".join(f"{figures.get(p, float('nan')):>13.4f}" for p in PEERS)
                verdict = "yes" if figures["selected"] >= best else "NO"
                print(
                    f"{title:<22}{how:<8}{'4' if minimum else '-':>4}{shown}"
                    f"{figures['selected']:>10.4f}  {verdict:<12} "
                    f"{report.selection.chosen.label()}  ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )


def _split(how: str) -> Split:
    return "random" if how == "random" else "recent"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="The peers' table instead.")
    parser.add_argument("--interactions", type=Path, action="append", default=[])
    parser.add_argument("--no-movielens", action="store_true")
    parser.add_argument(
        "--seed", type=int, default=42, help="The outer split's seed (42 is the one tuned on)."
    )
    args = parser.parse_args()
    if args.table:
        bench_table(args.interactions, not args.no_movielens, args.threads, args.seed)
    else:
        bench_build(args.runs, args.threads)


if __name__ == "__main__":
    main()
