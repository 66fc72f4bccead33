"""The accelerate set-up that SFT and GRPO share: devices, mixed precision, accumulation, trackers, seeds."""

from __future__ import annotations

from training.config import TrainingArguments


def make_accelerator(args: TrainingArguments, device: str):
    """One Accelerator per process. On a CPU it is told so, which also lets `accelerate launch --multi_gpu` (torchrun)
    start data-parallel gloo processes there; every process gets its own seed."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(
        cpu=device == "cpu",
        mixed_precision="bf16" if args.bf16 else "no",
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=[tracker for tracker in args.report_to if tracker != "none"] or None,
        project_dir=str(args.output_dir),
    )
    set_seed(args.seed + accelerator.process_index)
    return accelerator
