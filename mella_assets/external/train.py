"""The SFT training process Dagster launches through Pipes (``PipesSubprocessClient`` locally).

Launched as ``python -m mella_assets.external.train [--config config.json]`` or under ``torchrun
--nproc_per_node N -m mella_assets.external.train --config config.json``. The config comes from ``--config``
(every torchrun process reads the same file) or, without it, from the Pipes ``extras``. Only rank 0 talks to
Dagster: progress as log lines and custom messages while it trains, the result as the materialization's
metadata. Without a Pipes context (debugging by hand) progress and the result are printed as JSON lines.
Imports ``dagster_pipes`` only, never ``dagster``, so it runs in any environment that has torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

from mella_assets.lib.sft import SFTConfig, SFTResult, distributed_context, train_sft


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
        "loss_curve": {"raw_value": result.loss_curve, "type": "json"},
    }


def _read_config_file(argv: list[str]) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", help="JSON file with SFTConfig fields (default: the Pipes extras)")
    args = parser.parse_args(argv)
    if not args.config:
        return None
    with open(args.config, encoding="utf-8") as handle:
        return json.load(handle)


def run_under_pipes(file_config: dict[str, Any] | None) -> None:
    """Train (rank 0 of the launch) and report progress and the result back to Dagster."""
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        config = config_from_mapping(file_config if file_config is not None else pipes.extras)
        pipes.log.info(f"training {config.method} on {config.train_file} from {config.base_model}")

        def log(entry: dict) -> None:
            pipes.log.info(json.dumps(entry))
            pipes.report_custom_message(entry)

        result = train_sft(config, log=log)
        pipes.report_asset_materialization(metadata=result_metadata(result))


def run_plain(file_config: dict[str, Any]) -> None:
    """Train without Dagster (or as a rank other than 0), printing progress and the result as JSON lines."""
    config = config_from_mapping(file_config)
    result = train_sft(config, log=lambda entry: print(json.dumps(entry), flush=True))
    if distributed_context().is_main:
        print(json.dumps({"result": asdict(result)}), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Rank 0 under a Pipes launch reports to Dagster; other ranks and hand-run launches train quietly."""
    from dagster_pipes import PipesEnvVarParamsLoader

    file_config = _read_config_file(sys.argv[1:] if argv is None else argv)
    if PipesEnvVarParamsLoader().is_dagster_pipes_process() and distributed_context().is_main:
        run_under_pipes(file_config)
    elif file_config is not None:
        run_plain(file_config)
    else:
        raise SystemExit("no --config and no Dagster Pipes context: nothing to train")


if __name__ == "__main__":
    main()
