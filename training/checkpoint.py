"""Checkpoints that a kill can never leave half-written, and that `--requester PATH` loads as they are.

    OUTPUT_DIR/checkpoint-12/     the model in Hugging Face format (or only the LoRA adapter), its tokenizer,
                                  duet.json (base model spec, the requester settings it was trained with, the step)
    OUTPUT_DIR/checkpoint-12/trainer/   what resuming needs: optimizer, scheduler, trainer state, RNG per process
    OUTPUT_DIR/checkpoint-latest  a symlink to the newest complete checkpoint

A checkpoint is written under a temporary name and renamed when complete; checkpoint-latest is switched afterwards,
by replacing the link in one rename. A failure while saving (a full disk) removes the partial folder and leaves the
previous checkpoint as it was.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from agents.models import CHECKPOINT_INFO

LATEST = "checkpoint-latest"
TRAINER = "trainer"


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / f"checkpoint-{step}"


def latest_checkpoint(output_dir: Path) -> Path | None:
    link = output_dir / LATEST
    return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None


def save_checkpoint(
    accelerator, output_dir: Path, step: int, model, tokenizer, info: dict, trainer_state: dict, optimizer, scheduler, keep: int | None
) -> Path:
    """Every process must call this (each saves its own RNG state); the main process writes the rest. Raises
    OSError on the main process when the checkpoint could not be written; the previous one is then intact."""
    final = checkpoint_dir(output_dir, step)
    staging = output_dir / f".{final.name}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        (staging / TRAINER).mkdir(parents=True)
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    failure = None
    try:
        torch.save(rng_state(), staging / TRAINER / f"rng-{accelerator.process_index}.pt")
    except OSError as error:
        failure = error
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        try:
            if failure:
                raise failure
            missing = [i for i in range(accelerator.num_processes) if not (staging / TRAINER / f"rng-{i}.pt").is_file()]
            if missing:
                raise OSError(f"processes {missing} could not save their random state")
            accelerator.unwrap_model(model).save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            (staging / CHECKPOINT_INFO).write_text(json.dumps({**info, "step": step}, indent=1))
            torch.save(optimizer.state_dict(), staging / TRAINER / "optimizer.pt")
            torch.save(scheduler.state_dict(), staging / TRAINER / "scheduler.pt")
            (staging / TRAINER / "state.json").write_text(json.dumps(trainer_state, indent=1))
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
            point_latest_at(output_dir, final)
            prune(output_dir, keep)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            accelerator.wait_for_everyone()
    else:
        accelerator.wait_for_everyone()
    return final


def point_latest_at(output_dir: Path, checkpoint: Path) -> None:
    temporary = output_dir / f".{LATEST}.new"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(checkpoint.name)
    os.replace(temporary, output_dir / LATEST)


def prune(output_dir: Path, keep: int | None) -> None:
    """Remove the oldest complete checkpoints beyond `keep`; never the one checkpoint-latest points at."""
    if keep is None:
        return
    latest = latest_checkpoint(output_dir)
    complete = sorted((p for p in output_dir.glob("checkpoint-*") if p.name != LATEST and p.name.split("-")[-1].isdigit()), key=lambda p: int(p.name.split("-")[-1]))
    for old in complete[: max(0, len(complete) - keep)]:
        if old.resolve() != latest:
            shutil.rmtree(old, ignore_errors=True)


def load_trainer_state(checkpoint: Path, accelerator, optimizer, scheduler) -> dict:
    """Restore optimizer, scheduler and this process's RNG; return the trainer state (step, data position...)."""
    folder = checkpoint / TRAINER
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    restore_rng(torch.load(folder / f"rng-{accelerator.process_index}.pt", weights_only=False))
    return json.loads((folder / "state.json").read_text())


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
