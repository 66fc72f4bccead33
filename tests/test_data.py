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


# --- The hub's datasets as they are: GSM8K's `#### 72`, MATH's `\boxed{}`, multi-config datasets -------------------

GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell in all?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "A farm has 617 rows of 2 trees. How many trees are there?", "answer": "617 * 2 = <<617*2=1234>>1,234 trees\n#### 1,234"},
    {"question": "Weng earns $12 an hour. How much did she earn for 50 minutes?", "answer": "12/60 = $<<12/60=0.2>>0.2 per minute.\n50 * 0.2 = $<<50*0.2=10>>10.\n#### $10"},
    {"question": "A row whose solution lost its final line.", "answer": "The answer is 3."},
]
MATH_ROWS = [
    {"problem": "What is $\\frac{2}{4}$ in lowest terms?", "level": "Level 1", "type": "Prealgebra",
     "solution": "Divide both by 2: $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$."},
    {"problem": "Compute $2+3$.", "level": "Level 1", "type": "Algebra", "solution": "It is $\\boxed 5$."},
    {"problem": "Expand $x \\cdot x$.", "level": "Level 2", "type": "Algebra", "solution": "We get $\\fbox{x^{2}}$."},
    {"problem": "Two boxes.", "level": "Level 3", "type": "Algebra", "solution": "First $\\boxed{1}$ was wrong; in the end $\\boxed{\\{2, 3\\}}$."},
    {"problem": "No box.", "level": "Level 5", "type": "Geometry", "solution": "The area is 12."},
]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_gsm8k_shaped_file_converts_to_plain_numbers_with_the_solution_kept(tmp_path):
    source, out = tmp_path / "gsm8k-train.jsonl", tmp_path / "gsm8k.jsonl"
    write_jsonl(GSM8K_ROWS, source)
    result = duet("data", "convert", str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and "#### line" in result.stdout and "detected" in result.stdout
    assert "skipped 0 without a usable question or answer and 1 whose answer has no #### line" in result.stdout
    rows = read_jsonl(out)
    assert [r["answer"] for r in rows] == ["72", "1234", "10"]  # plain numbers: the exact-number rule judges them
    assert [r["metadata"]["solution"] for r in rows] == [r["answer"] for r in GSM8K_ROWS[:3]]
    assert load_rows(str(out)).rows == rows  # reading the converted file again changes nothing
    raw = tmp_path / "raw.jsonl"
    assert duet("data", "convert", str(source), "--answer-format", "raw", "--out", str(raw)).returncode == 0
    assert [r["answer"] for r in read_jsonl(raw)] == [r["answer"] for r in GSM8K_ROWS]


def test_a_math_shaped_parquet_takes_the_last_boxed_answer(tmp_path):
    import pandas

    source, out = tmp_path / "math.parquet", tmp_path / "math.jsonl"
    pandas.DataFrame(MATH_ROWS).to_parquet(source)
    result = duet("data", "convert", str(source), "--question-field", "problem", "--answer-field", "solution", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "\\boxed{}" in result.stdout and "and 1 whose answer has no \\boxed{}" in result.stdout
    rows = read_jsonl(out)
    assert [r["answer"] for r in rows] == ["\\frac{1}{2}", "5", "x^{2}", "\\{2, 3\\}"]
    assert [r["question"] for r in rows] == [r["problem"] for r in MATH_ROWS[:4]]
    assert rows[0]["metadata"] == {"level": "Level 1", "type": "Prealgebra", "solution": MATH_ROWS[0]["solution"]}


@pytest.mark.parametrize(("solution", "answer"), [
    ("so \\boxed{\\frac{a}{b^{2}}} and done", "\\frac{a}{b^{2}}"), ("$\\boxed 42$", "42"), ("\\boxed {7}", "7"), ("\\fbox{y}", "y"),
    ("\\boxed{1} then \\boxed{2}", "2"), ("\\boxed{3} then \\boxed{4", "3"), ("\\boxed{}", None), ("no box", None), ("\\boxedx{1}", None),
])
def test_the_last_boxed_answer_balances_braces(solution, answer):
    from training.data import extract_answer

    assert extract_answer(solution, "boxed") == answer


@pytest.mark.parametrize(("solution", "answer"), [
    ("a\n#### 72", "72"), ("#### 1,234,567", "1234567"), ("x\n#### -3.5", "-3.5"), ("x\n####  $18 ", "18"), ("x\n#### 5.", "5"),
    ("x\n#### 3/4", "3/4"), ("x\n#### ", None), ("the answer is 3", None), ("#### 7\nthen more text", None),
])
def test_the_gsm8k_answer_is_the_final_hash_line_as_a_plain_number(solution, answer):
    from training.data import extract_answer

    assert extract_answer(solution, "gsm8k") == answer


def test_plain_answers_are_left_alone_and_a_forced_format_counts_what_it_cannot_take(tmp_path):
    rows = big_value.generate(4, 0)
    path = tmp_path / "bv.jsonl"
    write_jsonl(rows, path)
    loaded = load_rows(str(path))
    assert loaded.answer_format == "raw" and [r["answer"] for r in loaded.rows] == [r["answer"] for r in rows]
    forced = load_rows(str(path), answer_format="gsm8k")
    assert forced.rows == [] and forced.skipped == forced.unextracted == 4


@pytest.fixture
def gsm8k_folder(tmp_path):
    """A dataset folder laid out as the hub's openai/gsm8k is: two configs, each its own files, no loading script."""
    root = tmp_path / "gsm8k"
    for config, rows in {"main": GSM8K_ROWS[:2], "socratic": GSM8K_ROWS[2:3]}.items():
        (root / config).mkdir(parents=True)
        write_jsonl(rows, root / config / "train.jsonl")
        write_jsonl(rows[:1], root / config / "test.jsonl")
    configs = "".join(f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train.jsonl\n  - split: test\n    path: {c}/test.jsonl\n"
                      for c in ("main", "socratic"))
    (root / "README.md").write_text(f"---\nconfigs:\n{configs}---\n")
    return root


def test_a_multi_config_dataset_needs_its_config_name(gsm8k_folder, tmp_path):
    with pytest.raises(DuetError) as error:
        load_rows(str(gsm8k_folder))
    assert "Config name is missing" in str(error.value) and "main, socratic" in str(error.value) and "--name main" in str(error.value)
    bad = duet("data", "convert", str(gsm8k_folder), "--out", str(tmp_path / "x.jsonl"))
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Config name is missing" in bad.stderr and "(ValueError)" not in bad.stderr
    out = tmp_path / "main.jsonl"
    converted = duet("data", "convert", str(gsm8k_folder), "--name", "main", "--split", "test", "--out", str(out))
    assert converted.returncode == 0, converted.stderr
    assert [r["answer"] for r in read_jsonl(out)] == ["72"]
    assert [r["answer"] for r in load_rows(str(gsm8k_folder), name="socratic").rows] == ["10"]
    wrong = duet("data", "convert", str(gsm8k_folder), "--name", "mian", "--out", str(tmp_path / "y.jsonl"))
    assert wrong.returncode == 1 and "'mian' not found" in wrong.stderr and "main" in wrong.stderr


def test_a_recipe_entry_names_the_config_split_and_columns(gsm8k_folder, tmp_path):
    from duet.configfile import load_config, parse_overrides
    from training.config import GRPORunConfig
    from training.data import load_source

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data:\n  train:\n  - {{path: {gsm8k_folder}, name: main}}\n  - {{path: {gsm8k_folder}, name: socratic, answer_format: raw}}\n"
                      "grpo: {output_dir: runs/x, num_generations: 2, per_device_train_batch_size: 2}\n")
    config = load_config(GRPORunConfig, recipe)
    assert [[r["answer"] for r in load_source(source).rows] for source in config.data.train] == [["72", "1234"], [GSM8K_ROWS[2]["answer"]]]
    plain = load_config(GRPORunConfig, recipe, parse_overrides(["data.train=[data/a.jsonl]"]))
    assert plain.data.train[0].path == "data/a.jsonl" and plain.data.train[0].name is None


@pytest.mark.parametrize(("name", "content", "said"), [
    ("empty.jsonl", "", "the file is empty"),
    ("blank.csv", "\n \n", "the file is empty"),
    ("broken.jsonl", '{"question": "a", "answer": "1"}\n\n{"question": broken\n{"question": "c", "answer": "3"}\n', "line 3 is not valid JSON"),
    ("listed.jsonl", '{"question": "a", "answer": "1"}\n[1, 2]\n', "line 2 is not a JSON object"),
    ("broken.json", '[{"question": "a", "answer": "1"},\n {"question": oops}]\n', "line 2 is not valid JSON"),
    ("bad.parquet", "not a parquet table", "Parquet magic bytes not found"),
])
def test_a_file_that_cannot_load_says_why_and_where_in_one_line(tmp_path, name, content, said):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DuetError, match=re.escape(said)) as error:
        load_rows(str(path))
    assert repr(str(path)) in str(error.value) and "StopIteration" not in str(error.value) and "DatasetGenerationError" not in str(error.value)
    result = duet("data", "convert", str(path), "--out", str(tmp_path / "out.jsonl"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr  # no progress bar or library log before it
    assert result.stderr.startswith("error: cannot load") and said in result.stderr
