"""The child process of tests/test_shards.py: one language's sources or some of its shards, materialized in this
process with ``MELLA_SHARDS`` shards (read when the code location is imported, so a test sets it per child).

    PYTHONPATH=tests:. MELLA_SHARDS=4 python -m support.shard_runs --lake L --language cs --site-port P \
        --site-dir D (--sources | --shards 00,01) [--kill-at N]

``--kill-at N``: SIGKILL this process at the N-th lake rename event (:class:`support.faults.RenameTrap`). Prints one
JSON line: the rename events each run made.
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
    runs += [(shard_assets, str(page_partition_key(args.language, shard))) for shard in args.shards.split(",") if shard]
    events = []
    with rename_trap(args.kill_at) as trap:
        for run_assets, key in runs:
            before = trap.events
            result = dg.materialize(run_assets, partition_key=key, resources=resources, raise_on_error=False)
            if not result.success:
                sys.stderr.write(run_failure_message(result) + "\n")
                return 1
            events.append({"partition": key, "events": trap.events - before})
    sys.stdout.write(json.dumps(events) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
