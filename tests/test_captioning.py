"""Captioning for D_ling: which images, the content-keyed cache (resume after a kill, reruns, shared images across
languages), rejects, and the metadata the Dagster UI shows."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from PIL import Image

from mella_assets.demo.tiny_models import SAMPLE_TEXTS, build_tiny_models
from mella_assets.know.images import image_key
from mella_assets.lib.cache import JsonCache
from mella_assets.lib.lake import TMP_PREFIX, LakeStore
from mella_assets.lib.vlm import VisionLanguageModel, load_caption_prompt
from mella_assets.lib.watchdog import stage_deadline
from mella_assets.ling.assets import mllm_captions
from mella_assets.ling.captioning import CaptionParams, caption_images
from mella_assets.ling.selection import select_images_for_captioning
from mella_assets.resources.lake import Lake
from mella_assets.resources.models import Captioner
from support.stage_deadline import Counting, DeadlineAfterCalls, RaisingOn

REPO = Path(__file__).resolve().parent.parent
TINY = "lake://models/tiny/captioner"


def store_images(store: LakeStore, language: str, colours: list[int], domains: list[str]) -> pl.DataFrame:
    """Store one small PNG per colour in the lake and write the `images` and `alt_text_pairs` tables."""
    rows = []
    for colour, domain in zip(colours, domains, strict=True):
        buffer = io.BytesIO()
        Image.new("RGB", (40 + colour % 7, 32), (colour % 256, (colour * 7) % 256, 90)).save(buffer, format="PNG")
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        store.put_bytes(image_key(sha, "png"), data)
        rows.append({"image_url": f"https://{domain}/{colour}.png", "image_sha256": sha,
                     "image_key": image_key(sha, "png"), "domain": domain})  # fmt: skip
    frame = pl.DataFrame(rows)
    store.write_table("images", language, frame.drop("domain").with_columns(pl.lit(language).alias("language")))
    store.write_table("alt_text_pairs", language, frame.select("image_url", "domain"))
    return frame


@pytest.fixture()
def lake_root(tmp_path: Path) -> Path:
    build_tiny_models(tmp_path / "models" / "tiny", SAMPLE_TEXTS, seed=0)
    return tmp_path


def materialize_captions(lake_root: Path, language: str, **config) -> dict:
    captioner = Captioner(model=TINY, backend="transformers", max_new_tokens=12, **config)
    result = dg.materialize(
        [mllm_captions], partition_key=language, resources={"lake": Lake(root=str(lake_root)), "captioner": captioner}
    )
    assert result.success
    (event,) = [
        e for e in result.asset_materializations_for_node("mllm_captions") if e.asset_key.path == ["mllm_captions"]
    ]
    return {name: value.value for name, value in event.metadata.items()}


def cache_files(lake_root: Path) -> int:
    """Cached captions on disk. A write in flight is a ``.tmp-…-<key>.json`` sibling: not a cached caption (a run
    killed just then leaves it behind, and the resumed run rightly recomputes that image)."""
    folder = lake_root / "cache" / "captions"
    return sum(1 for path in folder.rglob("*.json") if not path.name.startswith(TMP_PREFIX)) if folder.exists() else 0


# -- image selection ----------------------------------------------------------------------------------------


def selection_inputs(n_per_domain: dict[str, int]) -> tuple[pl.DataFrame, pl.DataFrame]:
    urls = [(f"https://{d}/{i}.jpg", d) for d, n in n_per_domain.items() for i in range(n)]
    images = pl.DataFrame({"image_url": [u for u, _ in urls],
                           "image_sha256": [hashlib.sha256(u.encode()).hexdigest() for u, _ in urls],
                           "image_key": [f"k/{i}" for i in range(len(urls))]})  # fmt: skip
    return images, pl.DataFrame({"image_url": [u for u, _ in urls], "domain": [d for _, d in urls]})


def test_without_limits_every_distinct_image_is_chosen_sorted_by_sha():
    images, pairs = selection_inputs({"a.cz": 3, "b.cz": 2})
    doubled = pl.concat([images, images])  # the same image found twice
    chosen = select_images_for_captioning(doubled, pairs)
    assert chosen.chosen["image_sha256"].to_list() == sorted(images["image_sha256"])
    assert (chosen.candidates, chosen.dropped_by_domain_cap, chosen.dropped_by_limit) == (5, 0, 0)
    assert chosen.per_domain == {"a.cz": 3, "b.cz": 2}


def test_per_domain_cap_keeps_one_site_from_dominating_the_sample():
    images, pairs = selection_inputs({"big.cz": 20, "small.cz": 2, "tiny.cz": 1})
    chosen = select_images_for_captioning(images, pairs, per_domain_cap=3)
    assert chosen.per_domain == {"big.cz": 3, "small.cz": 2, "tiny.cz": 1}
    assert chosen.dropped_by_domain_cap == 17
    limited = select_images_for_captioning(images, pairs, limit=4, per_domain_cap=3)
    assert limited.chosen.height == 4 and limited.dropped_by_limit == 2
    assert set(limited.chosen["image_sha256"]) <= set(chosen.chosen["image_sha256"])


def test_sample_is_deterministic_independent_of_row_order_and_changes_with_the_seed():
    images, pairs = selection_inputs({"a.cz": 10, "b.cz": 10})
    first = select_images_for_captioning(images, pairs, limit=6, per_domain_cap=4, seed=1).chosen
    shuffled = select_images_for_captioning(images.reverse(), pairs.reverse(), limit=6, per_domain_cap=4, seed=1)
    assert shuffled.chosen.equals(first)
    other = select_images_for_captioning(images, pairs, limit=6, per_domain_cap=4, seed=2).chosen
    assert other["image_sha256"].to_list() != first["image_sha256"].to_list()
    # a larger limit keeps every image chosen before
    bigger = select_images_for_captioning(images, pairs, limit=8, per_domain_cap=4, seed=1).chosen
    assert set(first["image_sha256"]) <= set(bigger["image_sha256"])


# -- captioning through the cache ----------------------------------------------------------------------------


def test_batched_captions_equal_one_at_a_time_through_the_cache(lake_root: Path):
    store = LakeStore(lake_root)
    chosen = store_images(store, "cs", list(range(0, 250, 50)), ["a.cz"] * 5).select(
        "image_sha256", "image_key", "domain"
    )
    vlm = VisionLanguageModel.from_pretrained(str(lake_root / "models/tiny/captioner"))
    prompt = load_caption_prompt()

    def run(batch_size: int, namespace: str):
        read = lambda key: Image.open(io.BytesIO(store.get_bytes(key))).convert("RGB")  # noqa: E731
        return caption_images(chosen, read, lambda: vlm, "tiny", prompt, JsonCache(store, namespace),
                              CaptionParams(max_new_tokens=10), batch_size, "cs", "tiny")  # fmt: skip

    one, _, _ = run(1, "one")
    batched, rejects, stats = run(4, "four")
    assert batched.equals(one)
    assert rejects.is_empty() and (stats.cache_hits, stats.cache_misses) == (0, 5)
    assert 0 < stats.new_tokens_generated <= 50


def test_killed_run_resumes_with_only_unfinished_images_and_a_full_rerun_makes_no_model_call(lake_root: Path):
    store = LakeStore(lake_root)
    total = 24
    store_images(store, "cs", list(range(total)), ["a.cz"] * total)
    script = (
        "import sys, dagster as dg\n"
        "from mella_assets.ling.assets import mllm_captions\n"
        "from mella_assets.resources.lake import Lake\nfrom mella_assets.resources.models import Captioner\n"
        "dg.materialize([mllm_captions], partition_key='cs', resources={'lake': Lake(root=sys.argv[1]),\n"
        f"  'captioner': Captioner(model='{TINY}', backend='transformers', max_new_tokens=12, batch_size=1)}})\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", script, str(lake_root)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while cache_files(lake_root) < 3:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no caption was cached in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = cache_files(lake_root)
    assert 3 <= finished < total
    assert not store.has_table("mllm_captions", "cs")  # nothing half-written is visible

    resumed = materialize_captions(lake_root, "cs", batch_size=8)
    assert (resumed["cache_hits"], resumed["cache_misses"]) == (finished, total - finished)
    assert resumed["rows_out"] == total and resumed["generated"] == total - finished
    assert store.read_table("mllm_captions", "cs")["image_sha256"].n_unique() == total

    again = materialize_captions(lake_root, "cs", batch_size=8)
    assert (again["cache_hits"], again["cache_misses"], again["model_seconds"]) == (total, 0, 0.0)
    assert again["cache_hit_rate"] == 1.0
    assert cache_files(lake_root) == total


def test_a_new_language_sharing_images_reuses_their_captions(lake_root: Path):
    store = LakeStore(lake_root)
    store_images(store, "cs", [1, 2, 3], ["a.cz"] * 3)
    cs = materialize_captions(lake_root, "cs")
    store_images(store, "vi", [1, 2, 3, 4], ["a.vn"] * 4)  # three images shared with cs, one new
    vi = materialize_captions(lake_root, "vi")
    assert (cs["cache_misses"], vi["cache_hits"], vi["cache_misses"]) == (3, 3, 1)
    captions = {lang: store.read_table("mllm_captions", lang) for lang in ("cs", "vi")}
    shared = captions["vi"].join(captions["cs"], on="image_sha256", suffix="_cs")
    assert shared.height == 3 and shared["caption_en"].to_list() == shared["caption_en_cs"].to_list()


def test_metadata_reports_selection_cache_rejects_tokens_and_throughput(lake_root: Path):
    store = LakeStore(lake_root)
    frame = store_images(store, "cs", list(range(6)), ["big.cz"] * 4 + ["small.cz"] * 2)
    store.put_bytes(frame["image_key"][5], b"not an image any more")
    meta = materialize_captions(lake_root, "cs", max_images_per_domain=3)
    assert meta["candidate_images"] == 6 and meta["dropped_by_domain_cap"] == 1
    assert meta["images_per_domain"] == {"big.cz": 3, "small.cz": 2}
    assert (meta["rows_in"], meta["rows_out"], meta["rows_rejected"]) == (5, 4, 1)
    assert meta["rejected_by_reason"] == {"image_unreadable": 1}
    assert (meta["cache_hits"], meta["cache_misses"], meta["cache_hit_rate"]) == (0, 5, 0.0)
    assert meta["new_tokens"] > 0 and meta["prompt_tokens"] > 0 and meta["generated_images_per_second"] > 0
    assert meta["backend"] == "transformers" and meta["model_version"].startswith("captioner@")
    assert store.read_table("caption_rejects", "cs")["reason"].to_list() == ["image_unreadable"]


# -- the stage deadline and failing items: keep what is done ------------------------------------------------


def caption_run(store: LakeStore, chosen: pl.DataFrame, backend, namespace: str = "captions", batch_size: int = 2):
    read = lambda key: Image.open(io.BytesIO(store.get_bytes(key))).convert("RGB")  # noqa: E731
    return caption_images(chosen, read, lambda: backend, "tiny", load_caption_prompt(), JsonCache(store, namespace),
                          CaptionParams(max_new_tokens=8), batch_size, "cs", "tiny")  # fmt: skip


@pytest.fixture()
def seven_images(lake_root: Path) -> tuple[LakeStore, pl.DataFrame, VisionLanguageModel]:
    store = LakeStore(lake_root)
    chosen = store_images(store, "cs", list(range(0, 210, 30)), ["a.cz"] * 7).select(
        "image_sha256", "image_key", "domain"
    )
    return store, chosen, VisionLanguageModel.from_pretrained(str(lake_root / "models/tiny/captioner"))


def test_a_deadline_mid_stage_keeps_finished_captions_and_the_rerun_captions_only_the_rest(seven_images):
    store, chosen, vlm = seven_images
    reference, _, _ = caption_run(store, chosen, vlm, namespace="reference")
    with stage_deadline("mllm_captions", seconds=3600):
        slow = DeadlineAfterCalls(vlm, calls=2)  # the deadline passes while the second batch of two runs
        frame, rejects, run = caption_run(store, chosen, slow)
    assert slow.seen == [2, 2]
    assert frame.equals(reference.head(4))
    assert rejects["image_sha256"].to_list() == chosen["image_sha256"].to_list()[4:]
    assert set(rejects["reason"]) == {"stage_deadline"}
    assert rejects["detail"][0] == "not captioned by the stage deadline (3600 s given)"
    assert run.failed == {"stage_deadline": 3}
    # The rerun asks the model only for the three, and the table equals a run that never met a deadline.
    counting = Counting(vlm)
    again, rejects_again, run_again = caption_run(store, chosen, counting)
    assert counting.seen == [2, 1] and (run_again.cache_hits, run_again.cache_misses) == (4, 3)
    assert rejects_again.is_empty() and again.equals(reference)


def test_an_image_whose_captioning_raises_costs_that_image_not_its_batch_or_the_stage(seven_images):
    store, chosen, vlm = seven_images
    reference, _, _ = caption_run(store, chosen, vlm, namespace="reference")
    odd_width = 40 + 60 % 7  # the third image
    failing = RaisingOn(vlm, lambda image: image.width == odd_width, ValueError("unsupported image shape"))
    frame, rejects, _ = caption_run(store, chosen, failing)
    assert rejects.select("image_sha256", "reason", "detail").rows() == [
        (chosen["image_sha256"][2], "caption_failed", "ValueError: unsupported image shape")
    ]
    assert frame.equals(reference.filter(pl.col("image_sha256") != chosen["image_sha256"][2]))
    # Its batch partner was captioned alone after the batch failed; the failure is not cached, so it is retried.
    assert failing.seen == [2, 2, 1, 1, 2, 1]
    again, rejects_again, run_again = caption_run(store, chosen, vlm)
    assert (run_again.cache_hits, run_again.cache_misses) == (6, 1) and rejects_again.is_empty()
    assert again.equals(reference)


def test_a_model_that_raises_on_every_image_fails_the_stage_instead_of_rejecting_them_all(seven_images):
    store, chosen, vlm = seven_images
    broken = RaisingOn(vlm, lambda image: True, RuntimeError("CUDA error: no kernel image is available"))
    with pytest.raises(RuntimeError, match=r"raised on every one of the 7 items.*no kernel image"):
        caption_run(store, chosen, broken)


def test_a_captions_stage_past_its_deadline_writes_what_it_has_and_the_rerun_completes_it(lake_root, monkeypatch):
    store = LakeStore(lake_root)
    store_images(store, "cs", [1, 2, 3], ["a.cz"] * 3)
    monkeypatch.setenv("MELLA_STAGE_TIMEOUT_S_MLLM_CAPTIONS", "0.001")  # past before the first batch
    meta = materialize_captions(lake_root, "cs")
    assert (meta["rows_out"], meta["rows_rejected"], meta["rejected_by_reason"]) == (0, 3, {"stage_deadline": 3})
    assert store.read_table("caption_rejects", "cs")["reason"].to_list() == ["stage_deadline"] * 3
    assert store.has_table("mllm_captions", "cs") and cache_files(lake_root) == 0
    monkeypatch.delenv("MELLA_STAGE_TIMEOUT_S_MLLM_CAPTIONS")
    meta = materialize_captions(lake_root, "cs")
    assert (meta["rows_out"], meta["rows_rejected"], meta["cache_misses"]) == (3, 0, 3)
    assert store.read_table("caption_rejects", "cs").is_empty()
