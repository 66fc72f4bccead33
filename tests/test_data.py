"""Datasets: the big-value transform is exact, generators are reproducible, every file format loads with a mapping."""

import json
import re
from decimal import Decimal, localcontext

import pytest

from agents.errors import DuetError
from tests.test_cli import duet
from training import big_value
from training.data import FieldMap, generate, load_rows, write_jsonl

# Written apart from the templates, in Decimal instead of Fraction, to check the answers independently.
INDEPENDENT = {
    "buy_more": lambda v: v["a"] + v["b"],
    "sell_some": lambda v: v["a"] - v["b"],
    "daily_rate": lambda v: v["a"] * v["days"],
    "product": lambda v: v["a"] * v["b"],
    "savings": lambda v: v["a"] * v["months"] - v["b"] * v["months"],
    "equal_shares": lambda v: v["total"] / v["people"],
    "percent_increase": lambda v: v["a"] + v["a"] * v["percent"] / 100,
    "two_legs": lambda v: v["c"] + v["b"] + v["a"],
    "remaining_after_two": lambda v: v["a"] - (v["b"] + v["c"]),
    "price_times_count": lambda v: v["count"] * v["a"],
}


def test_every_template_is_checked_independently():
    assert {t.name for t in big_value.TEMPLATES} == set(INDEPENDENT)


@pytest.mark.parametrize("seed", range(20))
def test_big_value_answers_are_exact(seed):
    for row in big_value.generate(50, seed):
        values = {k: Decimal(v) for k, v in row["metadata"]["values"].items()}
        with localcontext() as context:
            context.prec = 80
            expected = INDEPENDENT[row["metadata"]["template"]](values)
        assert Decimal(row["answer"]) == expected, row
        for text in row["metadata"]["values"].values():
            assert text in row["question"]
        big = [v for v in row["metadata"]["values"].values() if len(v.replace(".", "")) >= 9]
        assert big and all(9 <= len(v.replace(".", "")) <= 11 for v in big)
        assert re.fullmatch(r"-?\d+(\.\d+)?", row["answer"])


def test_generators_are_seeded_and_reproducible():
    for name in ("big-value", "gsm-symbolic", "arithmetic", "knights-knaves", "countdown"):
        first, again, other = generate(name, 5, 1), generate(name, 5, 1), generate(name, 5, 2)
        assert first == again and first != other
        assert all(row["question"] and row["answer"] for row in first)


def test_unknown_generator_names_the_choices():
    with pytest.raises(DuetError, match="big-value"):
        generate("bigvalue", 3, 0)


@pytest.fixture
def table():
    return [{"q": "What is 1 + 1?", "a": "2", "level": 1}, {"q": "What is 2 + 2?", "a": None, "level": 2}, {"q": "3 * 3?", "a": "9", "level": 3}]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_format_loads_with_a_field_mapping(tmp_path, table, suffix):
    import pandas

    path = tmp_path / f"data{suffix}"
    frame = pandas.DataFrame(table)
    {".jsonl": lambda: frame.to_json(path, orient="records", lines=True), ".json": lambda: frame.to_json(path, orient="records"),
     ".csv": lambda: frame.to_csv(path, index=False), ".parquet": lambda: frame.to_parquet(path)}[suffix]()
    loaded = load_rows(str(path), FieldMap(question="q", answer="a"))
    assert loaded.skipped == 1
    assert [(r["question"], r["answer"]) for r in loaded.rows] == [("What is 1 + 1?", "2"), ("3 * 3?", "9")]
    assert [int(r["metadata"]["level"]) for r in loaded.rows] == [1, 3]


def test_a_missing_column_is_named(tmp_path, table):
    path = tmp_path / "data.jsonl"
    write_jsonl(table, path)
    with pytest.raises(DuetError, match="no column answer, question") as error:
        load_rows(str(path))
    assert "q, a, level" in str(error.value)


def test_data_cli_make_and_convert(tmp_path, table):
    out = tmp_path / "bv.jsonl"
    made = duet("data", "make", "big-value", "--n", "12", "--seed", "4", "--out", str(out))
    assert made.returncode == 0, made.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == big_value.generate(12, 4)
    source = tmp_path / "raw.jsonl"
    write_jsonl(table, source)
    target = tmp_path / "c.jsonl"
    converted = duet("data", "convert", str(source), "--question-field", "q", "--answer-field", "a", "--out", str(target), env={"COLUMNS": "40"})
    assert converted.returncode == 0
    assert converted.stdout.strip() == f"wrote 2 rows to {target}; skipped 1 without a usable question or answer"  # one line, however narrow the terminal
    bad = duet("data", "convert", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x.jsonl"))
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_duet_jsonl_round_trips_with_its_own_ids_sources_and_metadata(tmp_path):
    rows = generate("countdown", 4, 3)
    path = tmp_path / "countdown.jsonl"
    write_jsonl(rows, path)
    loaded = load_rows(str(path)).rows
    assert [(r["id"], r["source"], r["answer"]) for r in loaded] == [(r["id"], r["source"], r["answer"]) for r in rows]
    assert [r["metadata"]["target"] for r in loaded] == [r["metadata"]["target"] for r in rows]


def test_data_filter_cli_saves_pass_rates_beside_the_data(tmp_path, tiny_dir):
    data = tmp_path / "bv.jsonl"
    write_jsonl(big_value.generate(3, 0), data)
    config = tmp_path / "short.yaml"
    config.write_text("requester: {max_segment_tokens: 8}\nlimits: {max_calls: 0}\n")
    result = duet("data", "filter", str(data), "--k", "2", "--out", str(tmp_path / "hard.jsonl"),
                  "--requester", str(tiny_dir), "--coder", str(tiny_dir), "--config", str(config))
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "bv.pass_rates.json").read_text())
    assert saved["k"] == 2 and set(saved["pass_rates"]) == {row["id"] for row in big_value.generate(3, 0)}
    kept = [json.loads(line)["id"] for line in (tmp_path / "hard.jsonl").read_text().splitlines()]
    assert kept == [row["id"] for row in sorted(big_value.generate(3, 0), key=lambda r: -saved["pass_rates"][r["id"]]) if saved["pass_rates"][row["id"]] < 1]
