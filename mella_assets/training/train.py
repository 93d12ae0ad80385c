"""The SFT training process Dagster launches through Pipes: a local subprocess (``PipesSubprocessClient``) or a
Kubernetes pod (``PipesK8sClient``), both on the same lake job.

Launched as ``python -m mella_assets.training.train --config <job>`` or under ``torchrun --nproc_per_node N -m
mella_assets.training.train --config <job>``. The config comes from ``--config`` (a local file or an ``s3://``
URI; every torchrun process reads the same one) or, without it, from the Pipes ``extras``. Dagster always hands
it a *lake job* (``mella_assets.training.lake_job``: lake keys only): the script copies its inputs from the lake
into a scratch folder, keeps its resume state in the lake while it trains, publishes the checkpoint to the lake
and removes its scratch folder. A plain SFTConfig with local paths is trained as it is (for running the script by
hand). Only rank 0 talks to Dagster: progress as log lines and custom messages while it trains, the result as the
materialization's metadata (through whatever channel the launcher chose: a temp file locally, stderr read back
from the pod's log on Kubernetes). Without a Pipes context (debugging by hand) progress and the result are
printed as JSON lines. Imports ``dagster_pipes`` only, never ``dagster``, so it runs in any environment that has
torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from typing import Any

from mella_assets.training.lake_job import (
    is_lake_job,
    mirroring_log,
    prepare_local_run,
    publish_output,
    read_job,
    remove_scratch,
    scratch_dir,
)
from mella_assets.training.sft import SFTConfig, SFTResult, distributed_context, train_sft

# A trainer: trains on a local SFTConfig, reporting progress entries to ``log`` (rank 0), and returns the result.
# ``train_sft`` (the builtin loop) here; ``mella_assets.training.trl_train`` runs this script's protocol with TRL.
TrainFunction = Callable[..., SFTResult]


def config_from_mapping(values: Mapping[str, Any]) -> SFTConfig:
    """Build an ``SFTConfig`` from its field names, ignoring other keys (Pipes extras may carry more)."""
    names = {field.name for field in fields(SFTConfig)}
    return SFTConfig(**{key: value for key, value in values.items() if key in names})


def result_metadata(result: SFTResult) -> dict[str, Any]:
    """Materialization metadata of a finished run."""
    return {
        "steps": result.steps,
        "first_loss": round(result.first_loss, 4),
        "final_loss": round(result.final_loss, 4),
        "train_examples": result.train_examples,
        "tokens_per_s": result.tokens_per_s,
        "seconds": result.seconds,
        "output_dir": result.output_dir,
        "resumed_from_step": result.resumed_from_step,
        "peak_memory_mb": result.peak_memory_mb,
        "peak_memory_kind": result.peak_memory_kind,
        "world_size": result.world_size,
        "answer_tokens": result.answer_tokens,
        "precision": result.precision,
        "effective_batch_size": result.effective_batch_size,
        "loss_curve": {"raw_value": result.loss_curve, "type": "json"},
    }


def _read_config_file(argv: list[str]) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", help="JSON file or s3:// URI: an SFTConfig or a lake job (default: Pipes extras)")
    args = parser.parse_args(argv)
    return read_job(args.config) if args.config else None


def train_from_mapping(
    values: dict[str, Any], log: Callable[[dict], None], train: TrainFunction = train_sft
) -> tuple[SFTResult, str]:
    """Train on a lake job (or a plain config) with ``train``; returns the result and where the checkpoint is (a
    URI or a folder).

    A lake job's inputs are copied into this rank's scratch folder, its resume state is kept in the lake at every
    save, rank 0 publishes the checkpoint under the job's output key, and each rank then removes its scratch."""
    if not is_lake_job(values):
        config = config_from_mapping(values)
        result = train(config, log=log)
        return result, result.output_dir
    dist = distributed_context()
    scratch = scratch_dir(values, dist.rank)
    store, config = prepare_local_run(values, scratch)
    result = train(config, log=mirroring_log(store, values, config, log))
    location = publish_output(store, values, config) if dist.is_main else ""
    remove_scratch(scratch)
    return result, location


def run_under_pipes(
    file_config: dict[str, Any] | None,
    train: TrainFunction = train_sft,
    extra_metadata: Mapping[str, Any] | None = None,
) -> None:
    """Train (rank 0 of the launch) and report progress and the result (with ``extra_metadata``) back to Dagster."""
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        values = file_config if file_config is not None else dict(pipes.extras)
        source = values.get("train_key", values.get("train_file"))
        pipes.log.info(f"training {values.get('method', 'lora')} on {source} from {values['base_model']}")

        def log(entry: dict) -> None:
            pipes.log.info(json.dumps(entry))
            pipes.report_custom_message(entry)

        result, location = train_from_mapping(values, log, train)
        metadata = {**result_metadata(result), **(extra_metadata or {}), "output_dir": location}
        pipes.report_asset_materialization(metadata=metadata)


def run_plain(
    file_config: dict[str, Any], train: TrainFunction = train_sft, extra_metadata: Mapping[str, Any] | None = None
) -> None:
    """Train without Dagster (or as a rank other than 0), printing progress and the result as JSON lines."""
    log = lambda entry: print(json.dumps(entry), flush=True)  # noqa: E731
    result, location = train_from_mapping(file_config, log, train)
    if distributed_context().is_main:
        print(json.dumps({"result": {**asdict(result), **(extra_metadata or {}), "output_dir": location}}), flush=True)


def main(
    argv: list[str] | None = None,
    train: TrainFunction = train_sft,
    extra_metadata: Mapping[str, Any] | None = None,
) -> None:
    """Rank 0 under a Pipes launch reports to Dagster; other ranks and hand-run launches train quietly. ``train``
    and ``extra_metadata`` let another trainer module speak the same protocol on the same jobs."""
    from dagster_pipes import PipesEnvVarParamsLoader

    file_config = _read_config_file(sys.argv[1:] if argv is None else argv)
    if PipesEnvVarParamsLoader().is_dagster_pipes_process() and distributed_context().is_main:
        run_under_pipes(file_config, train, extra_metadata)
    elif file_config is not None:
        run_plain(file_config, train, extra_metadata)
    else:
        raise SystemExit("no --config and no Dagster Pipes context: nothing to train")


if __name__ == "__main__":
    main()
