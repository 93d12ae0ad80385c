"""mella_dataset and mella_export on a real demo run (two languages): splits that survive a new WARC, exports that
LLaMA-Factory, ms-swift, DuckDB, polars and WebDataset read back, and a dataset card with the run's numbers."""

import hashlib
import json
import shutil

import dagster as dg
import duckdb
import polars as pl
import pytest
import webdataset as wds

from mella_assets.dataset.assets import mella_export
from mella_assets.definitions import build_definitions
from mella_assets.demo.corpus import build_demo_corpus, demo_texts
from mella_assets.demo.resources import demo_resources
from mella_assets.demo.site import ensure_demo_site_server
from mella_assets.demo.tiny_models import build_tiny_models
from mella_assets.jobs import LANGUAGE_PHASES, phase_partition_keys
from mella_assets.lib.catalog import run_sql
from mella_assets.lib.lake import LakeStore

pytestmark = pytest.mark.slow
CODES = ["cs", "vi"]
SHARD_MAX_BYTES = 150_000


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The demo for cs and vi, first with one WARC per language, then with the second WARC landed too."""
    root = tmp_path_factory.mktemp("export")
    lake_root, held_back = root / "lake", root / "held_back"
    port = free_port()
    build_demo_corpus(lake_root, f"http://127.0.0.1:{port}", CODES)
    ensure_demo_site_server(lake_root / "demo" / "site", port)
    build_tiny_models(lake_root / "models" / "tiny", demo_texts(CODES))
    held_back.mkdir()
    later = [warc for code in CODES for warc in sorted((lake_root / "landing" / code).glob("*.warc.gz"))[1:]]
    for warc in later:
        shutil.move(warc, held_back / f"{warc.parent.name}--{warc.name}")
    resources = demo_resources(str(lake_root), port)
    defs = build_definitions(resources)
    instance = dg.DagsterInstance.ephemeral()
    store = LakeStore(lake_root)

    def run_language(code: str) -> None:
        for job_name, sharded in LANGUAGE_PHASES:
            for key in phase_partition_keys(sharded, code):
                job = defs.resolve_job_def(job_name)
                assert job.execute_in_process(instance=instance, partition_key=key).success, key

    for code in CODES:
        run_language(code)
    before = store.read_table_all_languages("mella_dataset")
    for moved in sorted(held_back.iterdir()):
        code, name = moved.name.split("--")
        shutil.move(moved, lake_root / "landing" / code / name)
    for code in CODES:
        run_language(code)
    export = dg.materialize(
        [mella_export],
        resources=resources,
        instance=instance,
        run_config={"ops": {"mella_export": {"config": {"shard_max_bytes": SHARD_MAX_BYTES}}}},
    )
    assert export.success
    version = store.get_bytes("exports/LATEST").decode()
    yield {
        "store": store,
        "before": before,
        "after": store.read_table_all_languages("mella_dataset"),
        "dir": store.path(f"exports/{version}"),
        "version": version,
        "resources": resources,
        "instance": instance,
        "export_event": export,
    }
    instance.dispose()


def test_a_new_warc_adds_records_and_every_existing_test_item_stays_in_test(run):
    before, after = run["before"], run["after"]
    assert after.height > before.height  # the second WARC brought new pages and images
    joined = before.select("id", "split").join(after.select("id", "split"), on="id", suffix="_after")
    assert joined.height == before.height
    old_test = joined.filter(pl.col("split") == "test")
    assert old_test.height > 0 and (old_test["split_after"] == "test").all()
    assert (joined.filter(pl.col("split") == "train")["split_after"] == "train").all()


def load_llamafactory(export_dir):
    """Read the export as LLaMA-Factory does: dataset_info.json entries → files → sharegpt examples."""
    info = json.loads((export_dir / "dataset_info.json").read_text())
    examples = {}
    for name, entry in info.items():
        assert entry["formatting"] == "sharegpt"
        columns, tags = entry["columns"], entry["tags"]
        rows = json.loads((export_dir / entry["file_name"]).read_text(encoding="utf-8"))
        examples[name] = [
            (
                [(turn[tags["role_tag"]], turn[tags["content_tag"]]) for turn in row[columns["messages"]]],
                row[columns["images"]],
                tags,
            )
            for row in rows
        ]
    return examples


def test_the_sharegpt_json_follows_llamafactory_conventions(run):
    export_dir, after = run["dir"], run["after"]
    examples = load_llamafactory(export_dir)
    assert set(examples) == {"mella_train", "mella_test"}
    assert len(examples["mella_train"]) == int((after["split"] == "train").sum())
    assert len(examples["mella_test"]) == int((after["split"] == "test").sum())
    for turns, images, tags in examples["mella_train"] + examples["mella_test"]:
        roles = [role for role, _ in turns]
        # LLaMA-Factory: user turns at odd positions, assistant turns at even positions, ending with the assistant
        assert roles == [tags["user_tag"], tags["assistant_tag"]] * (len(roles) // 2) and len(roles) % 2 == 0
        assert sum(content.count("<image>") for _, content in turns) == len(images) == 1
        assert all(content.strip() for _, content in turns)
        # media_dir defaults to dataset_dir (this folder): every path must exist relative to it
        assert all((export_dir / path).is_file() for path in images)


def test_the_swift_jsonl_follows_ms_swift_messages_format(run):
    export_dir, after = run["dir"], run["after"]
    total = 0
    for split in ("train", "test"):
        lines = (export_dir / f"swift_{split}.jsonl").read_text(encoding="utf-8").splitlines()
        total += len(lines)
        for line in lines:
            row = json.loads(line)
            roles = [m["role"] for m in row["messages"]]
            assert roles == ["user", "assistant"]
            assert sum(m["content"].count("<image>") for m in row["messages"]) == len(row["images"]) == 1
            assert all((export_dir / path).is_file() for path in row["images"])
    assert total == after.height


def test_parquet_reads_back_in_duckdb_and_polars_with_identical_row_counts(run):
    path = run["dir"] / "data.parquet"
    frame = pl.read_parquet(path)
    (duck_rows,) = duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()
    assert frame.height == duck_rows == run["after"].height
    assert set(frame["id"]) == set(run["after"]["id"])
    assert all((run["dir"] / p).is_file() for p in frame["image_path"])


def test_webdataset_shards_read_back_into_the_same_records_within_the_size_cap(run):
    export_dir, after = run["dir"], run["after"]
    manifest = json.loads((export_dir / "webdataset" / "manifest.json").read_text())
    shards = manifest["shards"]
    assert len(shards) > 2  # the small cap forces several shards
    samples = {}
    for shard in shards:
        path = export_dir / "webdataset" / shard["path"]
        data = path.read_bytes()
        assert len(data) == shard["bytes"] <= SHARD_MAX_BYTES
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        for sample in wds.WebDataset(str(path), shardshuffle=False):
            meta = json.loads(sample["json"])
            assert meta["split"] == shard["split"]
            # the stored image is content-addressed: the shard's bytes hash to the record's image sha256
            assert hashlib.sha256(sample["jpg"]).hexdigest() == meta["image_sha256"]
            samples[sample["__key__"]] = meta
    expected = {row["id"]: row for row in after.iter_rows(named=True)}
    assert set(samples) == set(expected)
    for key, meta in samples.items():
        assert (meta["text"], meta["language"], meta["source"]) == (
            expected[key]["text"],
            expected[key]["language"],
            expected[key]["source"],
        )


def test_every_file_is_listed_with_its_checksum(run):
    export_dir = run["dir"]
    lines = (export_dir / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, path = line.split("  ", 1)
        listed[path] = digest
        assert hashlib.sha256((export_dir / path).read_bytes()).hexdigest() == digest, path
    on_disk = {p.relative_to(export_dir).as_posix() for p in export_dir.rglob("*") if p.is_file()}
    assert on_disk - set(listed) == {"MANIFEST.json", "SHA256SUMS"}
    manifest = json.loads((export_dir / "MANIFEST.json").read_text())
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == listed


def test_the_dataset_card_shows_the_statistics_of_the_run(run):
    card = (run["dir"] / "README.md").read_text(encoding="utf-8")
    after, store = run["after"], run["store"]
    assert f"**{after.height} records**" in card
    for code in CODES:
        part = after.filter(pl.col("language") == code)

        def n(source, split, part=part):
            return int(((part["source"] == source) & (part["split"] == split)).sum())

        row = (
            f"| {code} | {n('know', 'train')} | {n('know', 'test')} | {n('ling', 'train')} | {n('ling', 'test')} "
            f"| {part.height} | {part['image_sha256'].n_unique()} |"
        )
        assert row in card
    funnel = run_sql(store, "SELECT * FROM funnel_by_language WHERE stage = 'alt_text_pairs' ORDER BY language")
    cells = " | ".join(f"{k} / {r}" for k, r in funnel.select("kept", "rejected").iter_rows())
    assert f"| alt_text_pairs | {cells} |" in card
    top_domain = run_sql(store, "SELECT domain FROM pairs_per_domain ORDER BY records DESC, domain LIMIT 1").item()
    assert f"| {top_domain} |" in card
    for reason in run_sql(store, "SELECT DISTINCT reason FROM rejects_by_reason")["reason"]:
        assert f"| {reason} |" in card
    assert "None" not in card and "TODO" not in card and "{" not in card


def test_exporting_the_same_records_again_gives_the_same_version_and_bytes(run):
    before = (run["dir"] / "SHA256SUMS").read_bytes()
    again = dg.materialize(
        [mella_export],
        resources=run["resources"],
        instance=run["instance"],
        run_config={"ops": {"mella_export": {"config": {"shard_max_bytes": SHARD_MAX_BYTES}}}},
    )
    assert again.success
    assert run["store"].get_bytes("exports/LATEST").decode() == run["version"]
    assert (run["dir"] / "SHA256SUMS").read_bytes() == before


def test_datasets_loads_the_demo_export_both_ways_with_images_that_decode(run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets
    from PIL import Image

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    export_dir, after = run["dir"], run["after"]
    by_card = datasets.load_dataset(str(export_dir), cache_dir=str(tmp_path / "card"))
    files = {s: sorted(str(p) for p in export_dir.glob(f"data/*/{s}-*.parquet")) for s in ("train", "test")}
    by_files = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "files"))
    expected = {s: int((after["split"] == s).sum()) for s in ("train", "test")}
    for loaded in (by_card, by_files):
        assert {s: loaded[s].num_rows for s in loaded} == expected
        assert isinstance(loaded["train"].features["image"], datasets.Image)
        for row in loaded["test"]:
            record = after.row(by_predicate=pl.col("id") == row["id"], named=True)
            assert row["text"] == record["text"]
            assert row["image"].size == Image.open(run["store"].path(record["image_key"])).size
