"""Dataset stage: SFT records with native prompts, mix caps and a leak-free train/test split; the exports.

The public API other stages may use (training re-verifies the dataset before it spends GPU time)."""

from mella_assets.dataset.build import cross_language_problems, dataset_version, training_gate_problems

__all__ = ["cross_language_problems", "dataset_version", "training_gate_problems"]
