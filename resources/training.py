"""The SFT settings: which base model is fine-tuned, how, how it is launched, and when it is retrained."""

import os
import sys
from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.models import TINY_CAPTIONER

TRAIN_SCRIPT_MODULE = "mella_assets.external.train"


class Training(dg.ConfigurableResource):
    """Supervised fine-tuning of the base MLLM on the train split (run outside Dagster through Pipes), and the
    retraining policy the ``retraining_sensor`` applies."""

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
    batch_size: int = Field(8, description="Examples per step on each process.")
    seed: int = Field(0, description="Seed for data order and initialisation.")
    log_every: int = Field(5, description="Steps between progress reports (loss, tokens/s, peak memory).")
    save_every: int = Field(10, description="Steps between resume checkpoints in the work folder.")
    python: str = Field(sys.executable, description="Interpreter that runs mella_assets/external/train.py.")
    nproc_per_node: int = Field(
        default_factory=lambda: int(os.environ.get("MELLA_TRAINING_NPROC", "1")),
        description="Processes (GPUs) per node. Above 1, or with launcher 'torchrun', the script runs under "
        "`torchrun --standalone --nproc_per_node N` with DDP.",
    )
    launcher: str = Field(
        default_factory=lambda: os.environ.get("MELLA_TRAINING_LAUNCHER", "python"),
        description="'python' (one process) or 'torchrun'.",
    )
    work_root: str = Field(
        "",
        description="Local folder for resume state, one sub-folder per checkpoint id "
        "(default: <lake>/work/training). A killed run relaunched with the same data and settings resumes there.",
    )
    retrain_min_new_rows: int = Field(
        default_factory=lambda: int(os.environ.get("MELLA_RETRAIN_MIN_NEW_ROWS", "100")),
        description="Train rows mella_dataset must gain since the latest checkpoint before the retraining sensor "
        "requests a run.",
    )
    retrain_min_growth_share: float = Field(
        default_factory=lambda: float(os.environ.get("MELLA_RETRAIN_MIN_GROWTH_SHARE", "0")),
        description="Alternatively, growth as a share of the rows the latest checkpoint saw (0 = off; either "
        "threshold suffices).",
    )
    retrain_cooldown_seconds: int = Field(
        default_factory=lambda: int(os.environ.get("MELLA_RETRAIN_COOLDOWN_SECONDS", "3600")),
        description="Least time between two retraining requests (kept in the sensor's cursor).",
    )
    retrain_max_concurrent_runs: int = Field(
        default_factory=lambda: int(os.environ.get("MELLA_RETRAIN_MAX_CONCURRENT", "1")),
        description="No new request while this many training_job runs are queued or in progress.",
    )

    def uses_torchrun(self) -> bool:
        return self.launcher == "torchrun" or self.nproc_per_node > 1

    def launch_command(self, config_path: str | Path) -> list[str]:
        """The command that runs the training script on ``config_path`` (plain Python or torchrun)."""
        if self.launcher not in ("python", "torchrun"):
            raise ValueError(f"launcher must be 'python' or 'torchrun', not {self.launcher!r}")
        if self.nproc_per_node < 1:
            raise ValueError("nproc_per_node must be at least 1")
        script = ["-m", TRAIN_SCRIPT_MODULE, "--config", str(config_path)]
        if not self.uses_torchrun():
            return [self.python, *script]
        # `python -m torch.distributed.run` is torchrun without relying on the console script being on PATH.
        launcher = [self.python, "-m", "torch.distributed.run", "--standalone"]
        return [*launcher, f"--nproc_per_node={self.nproc_per_node}", *script]

    def work_dir(self, lake_root: Path, checkpoint_id: str) -> Path:
        """The stable folder of one training run's resume state."""
        root = Path(self.work_root) if self.work_root else Path(lake_root) / "work" / "training"
        return root / checkpoint_id
