"""The installed distributions the GPU check imports, as NAME==VERSION lines for `pip download`, without the large
ones every CUDA image with PyTorch has (bench/gpu_check.sh carries the rest as wheels to a machine without PyPI).

Found by importing what the check runs (duet's backend, graph and trainer, TRL's GRPOTrainer, the backend tests) and
mapping every loaded module to its distribution (libraries that import lazily are named down to the module
that runs), so a new import in duet is carried without editing a list.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODULES = ["agents.backends.transformers_local", "agents.models", "agents.requester", "duet.configfile", "graph.build", "training.config",
           "training.data", "training.grpo", "training.trainer", "training.answers", "transformers.generation.continuous_batching",
           "transformers.models.qwen2.modeling_qwen2", "accelerate", "peft", "math_verify", "trl.trainer.grpo_trainer", "datasets",
           "pytest", "pytest_asyncio", "tests.conftest", "tests.test_transformers_backend"]
PRESENT_THERE = {"duet", "torch", "numpy", "pandas", "pyarrow", "pillow", "sympy", "setuptools", "pip"}


def main() -> None:
    for module in MODULES:
        importlib.import_module(module)
    owners = metadata.packages_distributions()
    names = {name for module in list(sys.modules) for name in owners.get(module.split(".")[0], [])}
    for name in sorted(names, key=str.lower):
        if name.lower() not in PRESENT_THERE:
            print(f"{name}=={metadata.version(name)}")


if __name__ == "__main__":
    main()
