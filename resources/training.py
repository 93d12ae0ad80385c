"""The SFT settings: which base model is fine-tuned, how, and with which interpreter."""

import os
import sys

import dagster as dg
from pydantic import Field

from resources.models import TINY_CAPTIONER


class Training(dg.ConfigurableResource):
    """Supervised fine-tuning of the base MLLM on the train split (run outside Dagster through Pipes)."""

    base_model: str = Field(
        default_factory=lambda: os.environ.get("MELLA_BASE_MODEL", TINY_CAPTIONER),
        description="Hub id, local path or lake:// folder of the MLLM to fine-tune and evaluate.",
    )
    method: str = Field(
        default_factory=lambda: os.environ.get("MELLA_TRAINING_METHOD", "lora"),
        description="'lora' (PEFT adapter) or 'full'.",
    )
    max_steps: int = Field(
        default_factory=lambda: int(os.environ.get("MELLA_TRAINING_STEPS", "30")), description="Optimizer steps."
    )
    learning_rate: float = Field(
        default_factory=lambda: float(os.environ.get("MELLA_TRAINING_LR", "1e-3")), description="AdamW learning rate."
    )
    batch_size: int = Field(8, description="Examples per step.")
    seed: int = Field(0, description="Seed for data order and initialisation.")
    python: str = Field(sys.executable, description="Interpreter that runs mella_assets/external/train.py.")
