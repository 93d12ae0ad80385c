"""The child process of tests/test_shards.py: one language's sources or some of its shards, materialized in this
process with ``MELLA_SHARDS`` shards (read when the code location is imported, so a test sets it per child).

    PYTHONPATH=tests:. MELLA_SHARDS=4 python -m support.shard_runs --lake L --language cs --site-port P \
        --site-dir D (--sources | --shards 00,01 [--batch]) [--kill-at N]

``--batch``: the shards in one run over their partition range (as a backfill with ``MELLA_SHARDS_PER_RUN`` > 1
launches them), instead of a run per shard. ``--kill-at N``: SIGKILL this process at the N-th lake rename event
(:class:`support.faults.RenameTrap`). Prints one JSON line: per run, its partitions, the rename events it made and
each materialization's row count and rows by reason, by asset and partition.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--language", required=True)
    parser.add_argument("--site-port", type=int, required=True)
    parser.add_argument("--site-dir", required=True)
    parser.add_argument("--sources", action="store_true", help="register the language's WARC files")
    parser.add_argument("--shards", default="", help="comma-separated shard keys to materialize, in order")
    parser.add_argument("--batch", action="store_true", help="the shards in one partition-range run")
    parser.add_argument("--kill-at", type=int, default=None)
    args = parser.parse_args(argv)

    import dagster as dg

    from mella_assets.definitions import language_pipeline_assets
    from mella_assets.partitions import page_partition_key
    from support.faults import rename_trap, run_failure_message, stage_resources

    resources = stage_resources(args.lake, args.site_port, args.site_dir)
    assets = {asset.node_def.name: asset for asset in language_pipeline_assets()}
    runs = [([assets["crawl_sources"]], args.language)] if args.sources else []
    shard_assets = [assets[name] for name in ("raw_crawl", "alt_text_pairs", "images")]
    keys = [str(page_partition_key(args.language, shard)) for shard in args.shards.split(",") if shard]
    if args.batch and keys:
        runs.append((shard_assets, keys))
    else:
        runs += [(shard_assets, key) for key in keys]
    events = []
    with rename_trap(args.kill_at) as trap:
        for run_assets, key in runs:
            before = trap.events
            if isinstance(key, list):  # a backfill's range run: the partition range in the run's tags
                tags = {"dagster/asset_partition_range_start": key[0], "dagster/asset_partition_range_end": key[-1]}
                result = dg.materialize(run_assets, tags=tags, resources=resources, raise_on_error=False)
            else:
                result = dg.materialize(run_assets, partition_key=key, resources=resources, raise_on_error=False)
            if not result.success:
                sys.stderr.write(run_failure_message(result) + "\n")
                return 1
            events.append(
                {"partition": key, "events": trap.events - before, "metadata": materialization_counts(result)}
            )
    sys.stdout.write(json.dumps(events) + "\n")
    return 0


def materialization_counts(result) -> dict[str, dict[str, dict]]:
    """asset → partition → its materialization's row count and rows by reason (a rejects table's)."""
    counts: dict[str, dict[str, dict]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        metadata = materialization.metadata
        by_reason = metadata.get("rows_by_reason")
        counts.setdefault(materialization.asset_key.to_user_string(), {})[str(materialization.partition)] = {
            "rows": metadata["dagster/row_count"].value,
            "rows_by_reason": by_reason.value if by_reason is not None else None,
        }
    return counts


if __name__ == "__main__":
    raise SystemExit(main())
