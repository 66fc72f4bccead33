"""Datasets the method needs: loading question/answer files or hub datasets, and offline, seeded generators.

Every row becomes {"id", "question", "answer", "source", "metadata"}; answers are exact strings. Where the answer
column holds a worked solution (GSM8K's ending in `#### 72`, MATH's in a `\\boxed{}`), the gold answer is taken from
it and the whole text kept in metadata.solution. Rows without a usable question or answer, or whose answer cannot be
taken, are skipped and counted, never guessed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from pathlib import Path
from random import Random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.errors import DuetError
from training import big_value, big_value_steps, big_value_words, tool_questions

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
EXPECTED = {".jsonl": "one JSON object per line", ".json": "a JSON list of objects, or one object per line",
            ".parquet": "a parquet table", ".csv": "a header row, then one row per question"}
# reasoning-gym sets: GSM-style training sets, and generalisation sets that training never sees
REASONING_GYM = {
    "gsm-symbolic": "gsm_symbolic",
    "arithmetic": "basic_arithmetic",
    "knights-knaves": "knights_knaves",
    "countdown": "countdown",
}
GENERATORS = ["big-value", "big-value-steps", "big-value-words", *tool_questions.KINDS, *REASONING_GYM]
SPLIT_GENERATORS = {"big-value": big_value.generate, "big-value-steps": big_value_steps.generate, "big-value-words": big_value_words.generate}


class FieldMap(BaseModel):
    """Which columns hold the question and the answer."""

    model_config = ConfigDict(extra="forbid")

    question: str = "question"
    answer: str = "answer"


AnswerFormat = Literal["auto", "gsm8k", "boxed", "raw"]
ANSWER_FORMATS = {
    "gsm8k": "the number on each solution's last #### line",
    "boxed": "the content of each solution's last \\boxed{}",
    "raw": "the answer column as written",
}
UNEXTRACTED = {"gsm8k": "whose answer has no #### line", "boxed": "whose answer has no \\boxed{}"}


class DataSource(BaseModel):
    """One dataset: a file or a hub id, with `datasets.load_dataset`'s config name and split, the columns that hold
    the question and the answer, and how the gold answer is taken from the answer column. In a recipe's data.train
    (and in `duet eval --data`) a plain string is a source with the defaults: `{path: data/gsm.jsonl}`."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a .jsonl/.json/.parquet/.csv file, a dataset folder or a hub id (load_dataset's path)")
    name: str | None = Field(None, description="the config of a multi-config dataset (load_dataset's name): main or socratic for openai/gsm8k")
    split: str = Field("train", description="split of a hub dataset or folder")
    question_field: str = "question"
    answer_field: str = "answer"
    answer_format: AnswerFormat = Field(
        "auto",
        description="gsm8k: the number after the last #### line; boxed: the last \\boxed{}; raw: as written; auto: gsm8k "
        "or boxed when most answers are written so, else raw. The full text is kept in metadata.solution",
    )

    @model_validator(mode="before")
    @classmethod
    def _a_plain_path(cls, value):
        return {"path": str(value)} if isinstance(value, (str, Path)) else value

    @property
    def is_file(self) -> bool:
        return Path(self.path).suffix in FORMATS

    @property
    def is_plain(self) -> bool:
        """Only a path: everything else is the default."""
        return set(self.model_dump(exclude_defaults=True)) == {"path"}

    def load(self) -> LoadedData:
        return load_rows(self.path, FieldMap(question=self.question_field, answer=self.answer_field), self.split, self.name, self.answer_format)


class LoadedData(BaseModel):
    rows: list[dict]
    skipped: int = Field(0, description="rows left out: without a usable question or answer, or whose gold answer could not be extracted")
    unextracted: int = Field(0, description="of the skipped, rows whose answer column has no #### line or \\boxed{} to take the answer from")
    answer_format: AnswerFormat = Field("raw", description="how the gold answers were taken (auto resolved)")
    detected: bool = Field(False, description="answer_format was auto and the format was recognised")

    def summary(self, out: Path) -> str:
        """The line `duet data convert` prints."""
        if self.answer_format == "raw":
            return f"wrote {len(self.rows)} rows to {out}; skipped {self.skipped} without a usable question or answer"
        how = "detected; --answer-format raw keeps the whole text" if self.detected else "as asked"
        return (f"wrote {len(self.rows)} rows to {out}; gold answers are {ANSWER_FORMATS[self.answer_format]} ({how}), the full "
                f"solution is in metadata.solution; skipped {self.skipped - self.unextracted} without a usable question or answer "
                f"and {self.unextracted} {UNEXTRACTED[self.answer_format]}")


def parse_source(text: str, option: str = "--data") -> DataSource:
    """A command-line dataset: a path or hub id, or a YAML mapping like a recipe's data.train entry
    (`{path: openai/gsm8k, name: main, split: test}`)."""
    import yaml
    from pydantic import ValidationError

    if not text.lstrip().startswith("{"):
        return DataSource(path=text)
    try:
        return DataSource.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as error:
        raise DuetError(f"{option} {text}: not a valid mapping ({getattr(error, 'problem', None) or type(error).__name__}); write it like {{path: openai/gsm8k, name: main}}") from error
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the value"
        known = ", ".join(DataSource.model_fields)
        raise DuetError(f"{option} {text}: {where}: {first['msg']}; a dataset mapping takes {known}") from error


def load_source(source: DataSource | str | Path) -> LoadedData:
    """A recipe's data.train entry or an `eval --data` value."""
    return DataSource.model_validate(source).load()


def load_rows(source: str, fields: FieldMap | None = None, split: str = "train", name: str | None = None,
              answer_format: AnswerFormat = "auto") -> LoadedData:
    """A JSONL, JSON, parquet or CSV file, a dataset folder or a Hugging Face dataset id (with `name`, the config of a
    multi-config one), through the `datasets` library. A failure is one DuetError that keeps the library's reason,
    names the file and, for a broken JSON line, its number."""
    fields = fields or FieldMap()
    table = _load_table(source, split, name)
    missing = {fields.question, fields.answer} - set(table.column_names)
    if missing:
        raise DuetError(f"{source} has no column {', '.join(sorted(missing))}; its columns are {', '.join(table.column_names)}; map them with --question-field/--answer-field")
    path = Path(source)
    records = [(index, record) for index, record in enumerate(table) if _usable(record[fields.question]) and _usable(record[fields.answer])]
    skipped = len(table) - len(records)
    resolved = answer_format if answer_format != "auto" else detect_answer_format([str(r[fields.answer]) for _, r in records])
    rows, unextracted = [], 0
    for index, record in records:
        written = str(record[fields.answer]).strip()
        answer = extract_answer(written, resolved)
        if answer is None:
            unextracted += 1
            continue
        own = {"id", "source", "metadata", fields.question, fields.answer}
        metadata = {**{k: v for k, v in record.items() if k not in own}, **(record.get("metadata") or {})}
        if resolved != "raw":
            metadata["solution" if metadata.get("solution", written) == written else fields.answer] = written
        rows.append({
            "id": str(record.get("id") or f"{path.stem or source}-{index}"),
            "question": str(record[fields.question]).strip(),
            "answer": answer,
            "source": record.get("source") or source,
            "metadata": metadata,
        })
    return LoadedData(rows=rows, skipped=skipped + unextracted, unextracted=unextracted, answer_format=resolved,
                      detected=answer_format == "auto" and resolved != "raw")


def _load_table(source: str, split: str, name: str | None):
    import datasets

    path = Path(source)
    if path.suffix in FORMATS:
        if not path.is_file():
            raise DuetError(f"no data file at {source}{_relative_note(path)}; give a .jsonl, .json, .parquet or .csv file, or a hub dataset id")
        if name is not None:
            raise DuetError(f"{source} is a file: a config name ({name!r}) applies only to a hub dataset or a dataset folder; leave it out")
        if _is_blank(path):
            raise DuetError(f"cannot load {source!r}: the file is empty; give {EXPECTED[path.suffix]}")
        options = _csv_as_text(path) if path.suffix == ".csv" else {}
        try:
            with _quiet(datasets):
                return datasets.load_dataset(FORMATS[path.suffix], data_files=str(path), split="train", **options)
        except Exception as error:  # noqa: BLE001 - the datasets library raises many types; the user needs one line
            broken = _broken_json(path) if FORMATS[path.suffix] == "json" else None
            if broken:
                raise DuetError(f"cannot load {source!r}: {broken}; fix or remove that line") from error
            raise DuetError(f"cannot load {source!r}: {reason(error)}; give a readable .jsonl/.json/.parquet/.csv file") from error
    try:
        return datasets.load_dataset(source, name=name, split=split)
    except Exception as error:  # noqa: BLE001 - as above
        configs = re.search(r"Config name is missing.*?available configs: \[(.*?)\]", str(error), re.DOTALL)
        if configs:
            names = [n.strip(" '\"") for n in configs.group(1).split(",")]
            raise DuetError(
                f"cannot load {source!r}: Config name is missing; it has the configs {', '.join(names)}: name one "
                f"(data convert --name {names[0]}; in a data.train entry or eval --data: {{path: {source}, name: {names[0]}}})"
            ) from error
        raise DuetError(f"cannot load {source!r}: {reason(error)}; check the dataset id or folder, its config name and split, or give a .jsonl/.json/.parquet/.csv file") from error


def reason(error: BaseException) -> str:
    """The first line of what went wrong, looking through generic wrappers (datasets' DatasetGenerationError says
    only that an error occurred; its cause says which) down to an exception that says something."""
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    for link in chain:
        text = str(link).strip().splitlines()[0] if str(link).strip() else ""
        if text and not (type(link).__name__ == "DatasetGenerationError" and link.__cause__ is not None):
            return text if re.search(r"\(\w+(Error|Exception)\)$", text) else f"{text} ({type(link).__name__})"
    return f"{type(error).__name__} without a message"


def _relative_note(path: Path) -> str:
    return "" if path.is_absolute() else f" (relative paths are read from the current folder, {Path.cwd()})"


def _is_blank(path: Path) -> bool:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _broken_json(path: Path) -> str | None:
    """Where a JSON or JSON-lines file stops parsing, 1-based, or None when Python's own parser reads it all."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            json.loads(text)
            return None
        except json.JSONDecodeError as error:
            if error.msg != "Extra data":  # not JSON lines in a .json file: one document, broken here
                return f"line {error.lineno} is not valid JSON ({error.msg} at column {error.colno})"
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            return f"line {number} is not valid JSON ({error.msg} at column {error.colno})"
        if not isinstance(value, dict):
            return f"line {number} is not a JSON object (one {{...}} per line)"
    return None


@contextlib.contextmanager
def _quiet(datasets):
    """A local file loads in a moment: no progress bar, and no log line of the library's before the one-line error."""
    bars, verbosity = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def _csv_as_text(path: Path) -> dict:
    """CSV cells stay text, so an answer written 2 or 007 is not read back as 2.0 or 7."""
    import csv

    import datasets

    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    return {"features": datasets.Features({name: datasets.Value("string") for name in header}), "keep_default_na": False}


def _usable(value) -> bool:
    return value is not None and str(value).strip() != ""


# --- Gold answers inside worked solutions ------------------------------------------------------------------------

_GSM8K_FINAL = re.compile(r"(?:^|\n)[ \t]*####[ \t]*([^\n]*?)[ \t]*\Z")
_GROUPED_NUMBER = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def detect_answer_format(answers: list[str]) -> AnswerFormat:
    """gsm8k when most answers end with a #### line, boxed when most hold a \\boxed{} (or \\fbox{}), else raw."""
    if not answers:
        return "raw"
    if sum(bool(_GSM8K_FINAL.search(a.strip())) for a in answers) * 2 > len(answers):
        return "gsm8k"
    if sum(bool(_BOX_COMMAND.search(a)) for a in answers) * 2 > len(answers):
        return "boxed"
    return "raw"


def extract_answer(text: str, answer_format: AnswerFormat) -> str | None:
    """The gold answer in a dataset's answer column, or None when the format's marker is missing or empty."""
    text = text.strip()
    if answer_format == "gsm8k":
        return gsm8k_answer(text)
    if answer_format == "boxed":
        return last_boxed(text)
    return text


def gsm8k_answer(solution: str) -> str | None:
    """GSM8K's answer: what follows the final `####`, a plain number when it is one (`#### 1,234` gives 1234, `#### $5`
    gives 5), so the exact-number rule judges it."""
    found = _GSM8K_FINAL.search(solution.strip())
    if found is None or not found.group(1).strip():
        return None
    answer = found.group(1).strip()
    number = re.sub(r"^\$\s*", "", answer).rstrip(".")
    if _GROUPED_NUMBER.fullmatch(number):
        return number.replace(",", "")
    return number if re.fullmatch(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)", number) else answer


def last_boxed(solution: str) -> str | None:
    """The LaTeX inside the last `\\boxed{...}` (braces balanced), `\\fbox{...}`, or `\\boxed 5` (up to a `$` or the
    end of the line, as MATH writes it); None when there is none or it is empty or unclosed."""
    for command in reversed(list(_BOX_COMMAND.finditer(solution))):
        index = command.end()
        while index < len(solution) and solution[index] in " \t":
            index += 1
        if index < len(solution) and solution[index] == "{":
            depth, end = 0, index
            while end < len(solution):
                depth += {"{": 1, "}": -1}.get(solution[end], 0)
                if depth == 0:
                    break
                end += 1
            content = solution[index + 1 : end].strip() if depth == 0 else ""
        elif index > command.end():
            content = re.split(r"[$\n]", solution[index:], maxsplit=1)[0].strip()
        else:
            content = ""
        if content:
            return content
    return None


def generate(name: str, n: int, seed: int, split: str | None = None) -> list[dict]:
    if name in SPLIT_GENERATORS:
        return SPLIT_GENERATORS[name](n, seed, split)
    if split is not None:
        raise DuetError(f"--split applies to {', '.join(SPLIT_GENERATORS)} only; {name} takes only --seed (another seed is another sample)")
    if name in tool_questions.KINDS:
        return tool_questions.generate(name, n, seed)
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
