"""Datasets the method needs: loading question/answer files or hub datasets, and offline, seeded generators.

Every row becomes {"id", "question", "answer", "source", "metadata"}; answers are exact strings. Rows without a usable
question or answer are skipped and counted, never guessed.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from random import Random

from pydantic import BaseModel, ConfigDict, Field

from agents.errors import DuetError
from training import big_value

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# reasoning-gym sets: GSM-style training sets, and generalisation sets that training never sees
REASONING_GYM = {
    "gsm-symbolic": "gsm_symbolic",
    "arithmetic": "basic_arithmetic",
    "knights-knaves": "knights_knaves",
    "countdown": "countdown",
}
GENERATORS = ["big-value", *REASONING_GYM]


class FieldMap(BaseModel):
    """Which columns hold the question and the answer."""

    model_config = ConfigDict(extra="forbid")

    question: str = "question"
    answer: str = "answer"


class LoadedData(BaseModel):
    rows: list[dict]
    skipped: int = Field(0, description="rows without a usable question or answer")


def load_rows(source: str, fields: FieldMap | None = None, split: str = "train") -> LoadedData:
    """A JSONL, JSON, parquet or CSV file, or a Hugging Face dataset id, through the `datasets` library."""
    import datasets

    fields = fields or FieldMap()
    path = Path(source)
    try:
        if path.suffix in FORMATS:
            if not path.is_file():
                raise DuetError(f"no data file at {source}; give a .jsonl, .json, .parquet or .csv file, or a hub dataset id")
            options = _csv_as_text(path) if path.suffix == ".csv" else {}
            table = datasets.load_dataset(FORMATS[path.suffix], data_files=str(path), split="train", **options)
        else:
            table = datasets.load_dataset(source, split=split)
    except DuetError:
        raise
    except Exception as error:  # noqa: BLE001 - the datasets library raises many types; the user needs one line
        raise DuetError(f"cannot load {source!r} ({type(error).__name__}); give a .jsonl/.json/.parquet/.csv file or a reachable hub id") from error
    missing = {fields.question, fields.answer} - set(table.column_names)
    if missing:
        raise DuetError(f"{source} has no column {', '.join(sorted(missing))}; its columns are {', '.join(table.column_names)}; map them with --question-field/--answer-field")
    rows, skipped = [], 0
    for index, record in enumerate(table):
        question, answer = record[fields.question], record[fields.answer]
        if not _usable(question) or not _usable(answer):
            skipped += 1
            continue
        own = {"id", "source", "metadata", fields.question, fields.answer}
        metadata = {**{k: v for k, v in record.items() if k not in own}, **(record.get("metadata") or {})}
        rows.append({
            "id": str(record.get("id") or f"{path.stem or source}-{index}"),
            "question": str(question).strip(),
            "answer": str(answer).strip(),
            "source": record.get("source") or source,
            "metadata": metadata,
        })
    return LoadedData(rows=rows, skipped=skipped)


def _csv_as_text(path: Path) -> dict:
    """CSV cells stay text, so an answer written 2 or 007 is not read back as 2.0 or 7."""
    import csv

    import datasets

    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    return {"features": datasets.Features({name: datasets.Value("string") for name in header}), "keep_default_na": False}


def _usable(value) -> bool:
    return value is not None and str(value).strip() != ""


def generate(name: str, n: int, seed: int) -> list[dict]:
    if name == "big-value":
        return big_value.generate(n, seed)
    if name not in REASONING_GYM:
        raise DuetError(f"unknown generator {name!r}; choose one of: {', '.join(GENERATORS)}")
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(REASONING_GYM[name], size=n, seed=seed)
    return [
        {"id": f"{name}-{seed}-{index}", "question": entry["question"], "answer": str(entry["answer"]), "source": name,
         "metadata": _plain(entry["metadata"])}
        for index, entry in enumerate(dataset)
    ]


def _plain(value):
    """reasoning-gym metadata made JSON-safe (it may hold tuples, sets or Fractions)."""
    return json.loads(json.dumps(value, default=str))


def write_jsonl(rows: list[dict], out: Path) -> None:
    """Written to a temporary file and renamed, so an interrupted write never leaves half a dataset."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(out.suffix + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(out)



class TrainingStream:
    """The questions a run trains on, as an endless sequence of epochs, so that the questions of any step follow from
    the step number alone: a resumed run continues with exactly the questions it would have seen.

    curriculum: easy to hard by pass rate (from `duet data filter`), the same order every epoch; without pass rates
    it falls back to shuffle. shuffle: a new seeded order each epoch. file: the order of the file."""

    def __init__(self, rows: list[dict], order: str, seed: int, pass_rates: dict[str, float] | None = None):
        if not rows:
            raise DuetError("the training data has no usable rows; check the files under data.train")
        ranked = order == "curriculum" and bool(pass_rates)
        self.rows = sorted(rows, key=lambda row: -pass_rates.get(row["id"], 0.0)) if ranked else list(rows)
        self.shuffled = order == "shuffle" or (order == "curriculum" and not ranked)
        self.seed = seed

    @functools.lru_cache(maxsize=2)
    def epoch(self, number: int) -> list[dict]:
        if not self.shuffled:
            return self.rows
        rows = list(self.rows)
        Random(f"{self.seed}-{number}").shuffle(rows)
        return rows

    def take(self, start: int, count: int) -> list[dict]:
        """Rows `start` .. `start + count` of the endless sequence."""
        return [self.epoch(index // len(self.rows))[index % len(self.rows)] for index in range(start, start + count)]
