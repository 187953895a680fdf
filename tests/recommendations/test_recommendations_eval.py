"""Offline evaluation: the metrics on a hand-made example, the splits, the data-set
reader, and `gateway recs eval` on a generic interactions file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.recommendations.model import (
    Interaction,
    Model,
    ModelParams,
    build_matrix,
    top_items,
)
from gateway.recommendations.training.datasets import DatasetError, parse_interactions
from gateway.recommendations.training.evaluation import evaluate, ranking_metrics, split


def test_metrics_on_a_hand_made_ranking() -> None:
    # Hits at ranks 1 and 3 of 4; three relevant items, one never ranked.
    precision, recall, ndcg = ranking_metrics(["a", "x", "b", "y"], {"a", "b", "c"}, k=4)
    assert precision == pytest.approx(2 / 4)
    assert recall == pytest.approx(2 / 3)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    ideal = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg == pytest.approx(dcg / ideal)
    assert ranking_metrics(["x", "y"], {"a"}, k=2) == (0.0, 0.0, 0.0)
    assert ranking_metrics(["a"], {"a"}, k=1) == (1.0, 1.0, 1.0)


def _ratings(pairs: str) -> list[Interaction]:
    """'u1:a,b u2:b,c' -> one interaction per (user, item), at increasing times."""
    found = []
    for t, chunk in enumerate(pairs.split()):
        user, items = chunk.split(":")
        for k, item in enumerate(items.split(",")):
            found.append(Interaction(user, item, "rating", float(t * 100 + k)))
    return found


def test_random_split_holds_out_a_quarter_per_user_reproducibly() -> None:
    data = _ratings("u1:a,b,c,d,e,f,g,h u2:a,b,c,d u3:a")
    train, held = split(data, "random", seed=7)
    assert {u: len(items) for u, items in held.items()} == {"u1": 2, "u2": 1}
    assert split(data, "random", seed=7)[1] == held
    for user, items in held.items():
        assert not items & {x.item for x in train if x.user == user}
    assert any(x.user == "u3" for x in train)  # one item: nothing to hold out


def test_recent_split_holds_out_what_is_new_in_the_latest_interactions() -> None:
    data = _ratings("u1:a,b,c,a,d,e,f,g")  # "a" again late: seen in training, not held out
    _, held = split(data, "recent", seed=1)
    assert held == {"u1": {"f", "g"}}


def test_item_similarity_recommends_what_similar_users_liked() -> None:
    data = _ratings("u1:a,b u2:a,b u3:a,b u4:c,d u5:c,d u6:a u7:c u8:e,f,a,b,c,d")
    params = ModelParams(neighbours=5)
    matrix = build_matrix(data, params)
    model = Model.fit(matrix, params)
    index = matrix.user_index
    rows = [index["u6"], index["u7"]]
    _, scores = model.scores(matrix.weights[rows])
    top = top_items(scores, (matrix.weights[rows] > 0), 1)
    assert [matrix.items[row[0]] for row in top] == ["b", "d"]


def test_model_beats_popularity_where_tastes_cluster() -> None:
    # Two tastes; the blockbusters everyone has say nothing about either.
    lines = []
    for user in range(60):
        taste = "x" if user % 2 else "y"
        items = [f"{taste}{(user + k) % 12}" for k in range(6)] + ["hit1", "hit2"]
        lines.append(f"u{user}:" + ",".join(items))
    report = evaluate(_ratings(" ".join(lines)), ModelParams(), how="random", seed=3)
    assert report.model.precision > report.popularity.precision
    assert report.model.ndcg > report.popularity.ndcg


@pytest.mark.parametrize(
    "text",
    [
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t100\n2\t10\t2\t50\n",
        "1::10::4::100\n2::10::2::50\n",
        "userId,movieId,rating,timestamp\n1,10,4,100\n2,10,2,50\n",
        "1,10,4,100\n2,10,2,50\n",
    ],
)
def test_reads_common_interaction_formats(text: str) -> None:
    found = list(parse_interactions(text.splitlines(), min_rating=3))
    assert found == [Interaction("1", "10", "rating", 100.0)]


def test_a_header_without_user_and_item_is_refused() -> None:
    with pytest.raises(DatasetError, match="no user and item"):
        list(parse_interactions(["user,rating", "1,4"], min_rating=None))


def test_cli_evaluates_an_interactions_file(tmp_path: Path) -> None:
    rows = ["user,item,rating,timestamp"]
    for user in range(40):
        taste = "x" if user % 2 else "y"
        rows += [f"{user},{taste}{(user + k) % 10},5,{k}" for k in range(5)]
    path = tmp_path / "tiny.csv"
    path.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(
        main, ["recs", "eval", "--no-demo", "--no-movielens", "--interactions", str(path)]
    )
    assert result.exit_code == 0, result.output
    assert "seed 42" in result.output
    assert "precision@10" in result.output
    lines = result.output.splitlines()
    table = {line.split()[0]: line.split() for line in lines if line.startswith("  ")}
    # Every peer side by side, with precision, recall, NDCG, coverage and fit time.
    assert {"popularity", "EASE", "ALS", "item-kNN", "item-to-item", "selected"} <= set(table)
    selected, popular = float(table["selected"][1]), float(table["popularity"][1])
    assert selected > popular
    assert all(0.0 <= float(table["selected"][n]) <= 1.0 for n in (1, 2, 3, 4))
    assert any(line.startswith("  why: ") for line in lines)
    # What the evaluation cost, so an operator can size the machine for a build.
    assert any("peak memory (RSS)" in line and " MB" in line for line in lines)


def test_cli_applies_min_rating_and_split_to_every_data_set(tmp_path: Path) -> None:
    rows = ["user,item,rating,timestamp"]
    for user in range(30):
        taste = "x" if user % 2 else "y"
        rows += [f"{user},{taste}{(user + k) % 8},{5 if k < 4 else 1},{k}" for k in range(6)]
    path = tmp_path / "rated.csv"
    path.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(
        main,
        [
            "recs", "eval", "--no-demo", "--no-movielens", "--interactions", str(path),
            "--min-rating", "4", "--split", "recent",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ratings >= 4" in result.output
    assert "120 interactions" in result.output
    assert "most recent 25 %" in result.output
