"""Language × shard runs (issue #18, fan-out): a language's per-page stages split by site into shards that separate
processes run. Two processes sharing a language's shards write exactly the lake one process writes; a shard run
killed (SIGKILL) mid-way and rerun alone leaves the lake exactly as an uninterrupted run did. Each child imports the
code location with ``MELLA_SHARDS=4`` (the suite's own processes use one shard: tests/conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from conftest import free_port

from support.faults import FaultySite, lake_state, location_roots, state_differences, temp_files

pytestmark = pytest.mark.slow
LANGUAGE = "cs"
SHARDS = ["00", "01", "02", "03"]
REPO = Path(__file__).resolve().parent.parent
CHILD_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "MELLA_SHARDS": str(len(SHARDS)),
    "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}",
}
INPUTS = shutil.ignore_patterns("demo", "models")


@dataclass
class Crawl:
    source: Path  # the demo corpus: landing WARCs and the site the children fetch images from
    port: int
    root: Path

    def lake(self, name: str) -> Path:
        """A fresh lake holding only the corpus' landing files."""
        target = self.root / name
        shutil.copytree(self.source, target, ignore=INPUTS)
        return target

    def child(self, lake: Path, *args: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "support.shard_runs", "--lake", str(lake), "--language", LANGUAGE,
                   "--site-port", str(self.port), "--site-dir", str(self.source / "demo" / "site"), *args]  # fmt: skip
        return subprocess.Popen(command, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, lake: Path, *args: str) -> list[dict]:
        process = self.child(lake, *args)
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        return json.loads(out.strip().splitlines()[-1])


def state(lake: Path) -> dict:
    return lake_state(lake, location_roots(lake))


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    from mella_assets.demo.corpus import build_demo_corpus

    root = tmp_path_factory.mktemp("shards")
    port = free_port()
    build_demo_corpus(root / "corpus", f"http://127.0.0.1:{port}", [LANGUAGE])
    with FaultySite(root / "corpus" / "demo" / "site", port):
        yield Crawl(root / "corpus", port, root)


@pytest.fixture(scope="module")
def one_process(crawl):
    """The reference: sources and every shard in one process; the rename events of each run."""
    lake = crawl.lake("one")
    runs = crawl.run(lake, "--sources", "--shards", ",".join(SHARDS))
    return lake, {run["partition"]: run["events"] for run in runs}, {run["partition"]: run["metadata"] for run in runs}


def test_shards_split_a_languages_pages_by_site_with_no_page_in_two(one_process):
    lake, _, _ = one_process
    shards = {s: pl.read_parquet(lake / f"tables/raw_crawl/language={LANGUAGE}/shard={s}/data.parquet") for s in SHARDS}
    pages = [url for frame in shards.values() for url in frame["page_url"].to_list()]
    assert len(pages) == len(set(pages)) > 0
    assert sum(frame.height > 0 for frame in shards.values()) >= 2  # the corpus' sites spread over shards
    for frame in shards.values():  # a site's pages share a shard
        assert all(frame["domain"].is_in(other["domain"].implode()).not_().all() for other in shards.values()
                   if other is not frame and other.height)  # fmt: skip
    # The language-level read sees every shard.
    from mella_assets.lib.lake import LakeStore

    assert sorted(LakeStore(lake).read_table("raw_crawl", LANGUAGE)["page_url"].to_list()) == sorted(pages)


def test_two_processes_sharing_a_languages_shards_write_the_lake_one_process_writes(crawl, one_process):
    reference, _, _ = one_process
    lake = crawl.lake("two")
    crawl.run(lake, "--sources")
    children = [crawl.child(lake, "--shards", "00,02"), crawl.child(lake, "--shards", "01,03")]
    for child in children:
        _out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-3000:]
    assert state_differences(state(lake), state(reference)) == []
    assert temp_files(lake) == []


def test_a_shard_killed_mid_run_and_rerun_alone_leaves_the_lake_of_an_uninterrupted_run(crawl, one_process):
    reference, events, _ = one_process
    images = {
        s: pl.read_parquet(reference / f"tables/images/language={LANGUAGE}/shard={s}/data.parquet") for s in SHARDS
    }
    shard = max(SHARDS, key=lambda s: images[s].height)  # the shard with the most images: the most to lose
    total = events[f"{LANGUAGE}|{shard}"]
    lake = crawl.lake("killed")
    crawl.run(lake, "--sources")
    # An even event is just before a rename: the run dies with a temporary file written and the old file in place.
    kill_at = (total // 2) & ~1
    killed = crawl.child(lake, "--shards", shard, "--kill-at", str(kill_at))
    killed.communicate(timeout=600)
    assert killed.returncode == -signal.SIGKILL
    assert state(lake) != state(reference)

    crawl.run(lake, "--shards", shard)  # only the killed partition again
    crawl.run(lake, "--shards", ",".join(s for s in SHARDS if s != shard))
    assert state_differences(state(lake), state(reference)) == []
    assert temp_files(lake) == []


def test_a_backfill_batching_a_languages_shards_in_one_run_writes_the_lake_a_run_per_shard_writes(crawl, one_process):
    """MELLA_SHARDS_PER_RUN > 1: a backfill gives one run a range of shards; each shard asset works through them in
    turn (specs.each_shard). Same lake, and every partition's materialization has that shard's own counts."""
    reference, _, separate = one_process
    lake = crawl.lake("batched")
    crawl.run(lake, "--sources")
    keys = [f"{LANGUAGE}|{shard}" for shard in SHARDS]
    runs = crawl.run(lake, "--shards", ",".join(SHARDS), "--batch")
    assert [run["partition"] for run in runs] == [keys]
    assert state_differences(state(lake), state(reference)) == []
    assert temp_files(lake) == []
    batched = runs[0]["metadata"]
    for asset in ("raw_crawl", "alt_text_pairs", "alt_text_rejects", "images", "image_rejects"):
        assert batched[asset] == {key: separate[key][asset][key] for key in keys}, asset
    assert len({batched["raw_crawl"][key]["rows"] for key in keys}) > 1  # per shard, not one figure repeated


def test_the_per_page_stages_backfill_policy_batches_mella_shards_per_run():
    code = (
        "import json; from mella_assets.definitions import defs; graph = defs.resolve_asset_graph();"
        "print(json.dumps({k.to_user_string(): (lambda p: p and p.max_partitions_per_run)("
        "graph.get(k).backfill_policy) for k in graph.get_all_asset_keys()}))"
    )
    env = {**CHILD_ENV, "MELLA_SHARDS_PER_RUN": "3"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    policies = json.loads(done.stdout.strip().splitlines()[-1])
    sharded = {"raw_crawl", "alt_text_pairs", "alt_text_rejects", "images", "image_rejects"}
    assert {name: policies[name] for name in sharded} == dict.fromkeys(sharded, 3)
    assert policies["d_know"] is None and policies["mella_dataset"] is None  # a run per language
