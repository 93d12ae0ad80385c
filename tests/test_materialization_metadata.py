"""What the UI shows of every materialization of the demo: each table's row count and column schema, a preview
table with the human columns first, and rows in = rows out + rows rejected with every drop under a reason."""

import dagster as dg

from mella_assets.metadata import is_machine_column
from mella_assets.partitions import page_partition_keys
from mella_assets.tables import TABLES

# The stages that filter their input: each must account for every row it does not keep.
FILTERING_ASSETS = {
    "crawl_sources",
    "raw_crawl",
    "alt_text_pairs",
    "images",
    "d_know",
    "mllm_captions",
    "translations",
    "d_ling",
    "mella_dataset",
}


def latest_by_partition(instance: dg.DagsterInstance, key: str) -> dict[str | None, dict]:
    """The metadata values of the latest materialization of each partition of ``key``."""
    latest: dict[str | None, dict] = {}
    for record in instance.fetch_materializations(dg.AssetKey(key), limit=1000).records:
        event = record.asset_materialization
        if event.partition not in latest:
            latest[event.partition] = {name: value.value for name, value in event.metadata.items()}
    return latest


def test_rows_in_equal_rows_out_plus_rows_rejected_by_reason_for_every_asset_and_partition(demo):
    accounted, broken = set(), []
    for key in TABLES:
        for partition, metadata in latest_by_partition(demo["instance"], key).items():
            if "rows_rejected" not in metadata:
                continue
            accounted.add(key)
            by_reason = metadata["rejected_by_reason"]
            if metadata["rows_in"] != metadata["rows_out"] + metadata["rows_rejected"] or metadata[
                "rows_rejected"
            ] != sum(by_reason.values()):
                broken.append((key, partition, metadata["rows_in"], metadata["rows_out"], by_reason))
    assert broken == []
    assert accounted >= FILTERING_ASSETS


def test_d_know_names_the_pairs_it_drops(demo):
    for partition, metadata in latest_by_partition(demo["instance"], "d_know").items():
        assert metadata["rows_in"] > metadata["rows_out"], partition  # the demo corpus has a 404 image
        assert metadata["rejected_by_reason"]["no_stored_image"] > 0, partition


def test_every_table_reports_its_row_count_column_schema_and_a_preview_with_human_columns_first(demo):
    for key, table in TABLES.items():
        materializations = latest_by_partition(demo["instance"], key)
        assert materializations, key
        for partition, metadata in materializations.items():
            schema = metadata["dagster/column_schema"]
            assert [c.name for c in schema.columns] == list(table.columns), (key, partition)
            assert isinstance(metadata["dagster/row_count"], int), (key, partition)
            preview = metadata.get("preview")
            if preview is None:
                continue
            assert isinstance(preview, dg.TableMetadataValue), (key, type(preview))
            if preview.records:
                columns = [c.name for c in preview.schema.columns]  # the UI's column order (records are key-sorted)
                machine = [is_machine_column(c) for c in columns]
                assert machine == sorted(machine), (key, columns)  # no human column after a hash or id


def test_previews_of_alt_text_pairs_begin_with_language_and_alt_text(demo):
    # alt_text_pairs is sharded: its first Czech shard (the suite runs one shard per language).
    preview = latest_by_partition(demo["instance"], "alt_text_pairs")[str(page_partition_keys("cs")[0])]["preview"]
    assert [c.name for c in preview.schema.columns][:2] == ["language", "alt_text"]
    assert preview.records[0].data["alt_text"]
