"""The SFT training process Dagster launches through Pipes (``PipesSubprocessClient`` locally).

The launching asset passes the :class:`~mella_assets.lib.sft.SFTConfig` fields as Pipes ``extras``; progress goes
back as log lines and custom messages, the result as the asset materialization's metadata. Imports
``dagster_pipes`` only, never ``dagster``, so it runs in any environment that has torch.

For debugging without Dagster: ``python -m mella_assets.external.train --config config.json`` (the same keys).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

from mella_assets.lib.sft import SFTConfig, SFTResult, train_sft


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
    }


def run_under_pipes() -> None:
    """Train with the config from the Pipes extras and report back to Dagster."""
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        config = config_from_mapping(pipes.extras)
        pipes.log.info(f"training {config.method} on {config.train_file} from {config.base_model}")

        def log(entry: dict) -> None:
            pipes.log.info(json.dumps(entry))
            pipes.report_custom_message(entry)

        result = train_sft(config, log=log)
        pipes.report_asset_materialization(metadata=result_metadata(result))


def run_standalone(argv: list[str]) -> None:
    """Train with the config from a JSON file, printing progress and the result as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="JSON file with SFTConfig fields")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as handle:
        config = config_from_mapping(json.load(handle))
    result = train_sft(config, log=lambda entry: print(json.dumps(entry), flush=True))
    print(json.dumps({"result": asdict(result)}), flush=True)


def main() -> None:
    """Standalone when given ``--config``; otherwise a Pipes process launched by Dagster."""
    if "--config" in sys.argv[1:]:
        run_standalone(sys.argv[1:])
    else:
        run_under_pipes()


if __name__ == "__main__":
    main()
