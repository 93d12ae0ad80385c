import json
import random

import polars as pl
import pytest
from dataset_helpers import CZECH_ALTS, CZECH_CAPTIONS, know_frame, ling_frame, near_copy, picture

from mella_assets.dataset.build import (
    DATASET_SCHEMA,
    MixPolicy,
    SplitPolicy,
    answers_out_of_bounds,
    build_sft_records,
    duplicate_answer_rate,
    image_clusters,
    load_prompt_bank,
    near_duplicate_pairs,
    prompts_for,
    schema_problems,
    split_leakage,
)
from mella_assets.know.images import ValidatedImage, hamming, validate_image
from mella_assets.languages import LANGUAGES


def validated(data: bytes) -> ValidatedImage:
    checked = validate_image(data)
    assert isinstance(checked, ValidatedImage)
    return checked


@pytest.fixture(scope="module")
def pictures():
    """40 distinct pictures and, for the first 10, a resized re-encoded copy, through the real image validator."""
    originals = [validated(picture(seed)) for seed in range(40)]
    copies = [validated(near_copy(picture(seed))) for seed in range(10)]
    return originals, copies


def inputs(images, n_know=None):
    alts = [f"{CZECH_ALTS[i % len(CZECH_ALTS)]} č. {i}" for i in range(len(images))]
    captions = [f"{CZECH_CAPTIONS[i % len(CZECH_CAPTIONS)]} Číslo {i}." for i in range(len(images))]
    know = know_frame("cs", images[:n_know], alts[:n_know])
    return know, ling_frame("cs", images, captions)


def test_records_take_answers_from_alt_texts_and_translations_with_native_prompts_and_provenance(pictures):
    originals, _ = pictures
    know, ling = inputs(originals[:1])
    records = build_sft_records(know, ling, LANGUAGES["cs"]).records
    by_source = {row["source"]: row for row in records.iter_rows(named=True)}
    assert by_source["know"]["text"] == "Pražský hrad v zimě se zasněženými střechami č. 0"
    assert by_source["ling"]["text"].startswith("Na obrázku je velká stará budova")
    assert by_source["know"]["prompt"] in prompts_for("cs", "know")
    assert by_source["ling"]["prompt"] in prompts_for("cs", "ling")
    assert by_source["ling"]["caption_en"] == "English caption 0"
    # ling records trace back to the page where their image was found
    assert by_source["ling"]["page_url"] == by_source["know"]["page_url"] == "https://a.example/page-0"
    assert [by_source[s]["source_table"] for s in ("know", "ling")] == ["d_know", "d_ling"]
    conversation = json.loads(by_source["know"]["conversation"])
    assert [turn["role"] for turn in conversation] == ["user", "assistant"]
    assert conversation[0]["content"] == f"<image>\n{by_source['know']['prompt']}"
    assert records.schema == pl.Schema(DATASET_SCHEMA)


def test_an_image_and_its_resized_reencoded_copy_always_land_in_the_same_split(pictures):
    originals, copies = pictures
    # The copies are different files (other sha256) and some have another dHash: the Hamming search is needed.
    assert all(o.sha256 != c.sha256 for o, c in zip(originals, copies, strict=False))
    assert max(hamming(o.phash, c.phash) for o, c in zip(originals, copies, strict=False)) >= 1
    images = originals + copies
    know, ling = inputs(images)
    # A large test set, so several copy clusters are drawn into test: the property is checked both ways.
    build = build_sft_records(
        know, ling, LANGUAGES["cs"], split=SplitPolicy(test_groups_per_source=12, max_test_share=0.5)
    )
    split_of = dict(build.records.filter(pl.col("source") == "know").select("image_sha256", "split").iter_rows())
    pairs = [(split_of[o.sha256], split_of[c.sha256]) for o, c in zip(originals, copies, strict=False)]
    assert all(a == b for a, b in pairs)
    assert {a for a, _ in pairs} == {"train", "test"}
    assert split_leakage(build.records) == 0
    assert build.stats["near_duplicate_images"] == 10
    assert build.stats["clusters"] == 40


def test_near_duplicate_search_finds_exactly_the_pairs_a_brute_force_finds():
    rng = random.Random(7)
    base = [rng.getrandbits(64) for _ in range(300)]
    # flip 1..10 bits of some hashes: pairs on both sides of the threshold
    hashes = base + [value ^ sum(1 << b for b in rng.sample(range(64), rng.randint(1, 10))) for value in base[:150]]
    hexes = [f"{value:016x}" for value in hashes]
    expected = {
        (i, j) for i in range(len(hexes)) for j in range(i + 1, len(hexes)) if (hashes[i] ^ hashes[j]).bit_count() <= 6
    }
    assert set(near_duplicate_pairs(hexes, 6)) == expected
    assert 50 < len(expected) < 150


def test_clusters_are_transitive_and_images_without_a_hash_stand_alone():
    frame = pl.DataFrame(
        {
            "image_sha256": ["a", "b", "c", "d", "e"],
            "phash": ["0000000000000000", "0000000000000007", "000000000000003f", "ffffffffffffffff", None],
        }
    )
    # a–b 3 bits, b–c 3 bits (a–c 6 bits): one cluster through b with a threshold of 3
    assert image_clusters(frame, 3) == {"a": "a", "b": "a", "c": "a", "d": "d", "e": "e"}


def test_the_test_set_has_a_fixed_number_of_clusters_per_source(pictures):
    originals, _ = pictures
    know, ling = inputs(originals, n_know=30)
    build = build_sft_records(know, ling, LANGUAGES["cs"], split=SplitPolicy(test_groups_per_source=4))
    tests = build.records.filter(pl.col("split") == "test")
    assert tests.filter(pl.col("source") == "know")["split_group"].n_unique() == 4
    assert tests.filter(pl.col("source") == "ling")["split_group"].n_unique() == 4
    # a small language keeps most of its data for training: at most max_test_share of clusters, at least one
    small = build_sft_records(*inputs(originals[:5]), LANGUAGES["cs"], split=SplitPolicy(4, max_test_share=0.3))
    assert small.records.filter(pl.col("split") == "test")["split_group"].n_unique() == 1


def test_adding_data_keeps_every_test_item_in_test_and_every_train_item_in_train(pictures):
    originals, copies = pictures
    policy = SplitPolicy(test_groups_per_source=3)
    first = build_sft_records(*inputs(originals[:12]), LANGUAGES["cs"], split=policy).records
    grown_images = originals[:12] + copies + originals[12:]
    second = build_sft_records(
        *inputs(grown_images, n_know=len(grown_images)), LANGUAGES["cs"], split=policy, previous=first
    )
    after = second.records.join(first.select("id", "split"), on="id", suffix="_before")
    assert after.height == first.height  # every earlier record is still there
    assert (after["split"] == after["split_before"]).all()
    assert split_leakage(second.records) == 0


def test_rebuilding_with_the_previous_table_gives_identical_records(pictures):
    originals, copies = pictures
    know, ling = inputs(originals[:20] + copies[:5])
    first = build_sft_records(know, ling, LANGUAGES["cs"]).records
    assert build_sft_records(know, ling, LANGUAGES["cs"], previous=first).records.equals(first)


def test_mix_caps_are_deterministic_and_every_capped_record_is_rejected_with_a_reason(pictures):
    originals, _ = pictures
    know, ling = inputs(originals[:20])
    other = know.slice(10).with_columns(pl.lit("b.example").alias("domain"))
    know = pl.concat([know.head(10), other])
    mix = MixPolicy(max_per_source={"ling": 12}, ling_per_know=0.5, max_per_domain=20)
    build = build_sft_records(know, ling, LANGUAGES["cs"], mix=mix)
    records = build.records
    assert records.group_by("source").len().sort("source").rows() == [("know", 20), ("ling", 10)]
    assert dict(build.rejects.group_by("reason").len().rows()) == {"source_cap": 8, "ling_ratio_cap": 2}
    assert build_sft_records(know, ling, LANGUAGES["cs"], mix=mix).records.equals(records)
    capped = build_sft_records(know, ling, LANGUAGES["cs"], mix=MixPolicy(max_per_domain=12))
    # each domain has 10 know + 10 ling records (a ling record inherits the domain of its image's page)
    assert capped.records.group_by("domain").len().sort("domain").rows() == [("a.example", 12), ("b.example", 12)]
    assert dict(capped.rejects.group_by("reason").len().rows()) == {"domain_cap": 16}


def test_empty_answers_are_rejected_not_dropped(pictures):
    originals, _ = pictures
    know, ling = inputs(originals[:3])
    know = know.with_columns(pl.Series("alt_text", ["Pražský hrad", "  ", None]))
    build = build_sft_records(know, ling.head(0), LANGUAGES["cs"])
    assert build.records["text"].to_list() == ["Pražský hrad"]
    assert build.rejects["reason"].to_list() == ["empty_answer", "empty_answer"]


def test_schema_problems_name_each_broken_column():
    records = build_sft_records(*inputs([]), LANGUAGES["cs"]).records
    assert schema_problems(records, "cs") == {}
    broken = pl.DataFrame(
        {
            "id": ["1", "1"],
            "language": ["cs", "vi"],
            "source": ["know", "web"],
            "split": ["train", None],
            "text": ["a", "b"],
        }
    )
    problems = schema_problems(broken, "cs")
    assert problems["image_key"] == "None (expected String)"
    assert problems["split"] == "1 nulls"
    assert problems["source"] == "values outside ['know', 'ling']: ['web']"
    assert problems["language"] == "values outside ['cs']: ['vi']"
    assert problems["id"] == "1 duplicate ids"


def test_leakage_counts_near_duplicate_clusters_split_across_train_and_test():
    frame = pl.DataFrame(
        {
            "image_sha256": ["a", "b", "c", "d"],
            "phash": ["00000000000000ff", "00000000000000fe", "ffff000000000000", "0f0f0f0f0f0f0f0f"],
            "split": ["train", "test", "train", "train"],
        }
    )
    assert split_leakage(frame, max_distance=8) == 1
    assert split_leakage(frame.with_columns(pl.lit("train").alias("split")), max_distance=8) == 0


def test_duplicate_answer_rate_and_length_bounds():
    frame = pl.DataFrame(
        {
            "source": ["know", "know", "know", "ling", "ling"],
            "text": ["Hrad", " hrad ", "Most", "Krátký", "Dlouhý popis obrázku s detaily."],
        }
    )
    assert duplicate_answer_rate(frame) == 0.4
    assert answers_out_of_bounds(frame) == 1  # the 6-character ling answer is below 10


def test_the_prompt_bank_has_several_native_phrasings_for_every_language():
    bank = load_prompt_bank()
    for code in LANGUAGES:
        for source in ("know", "ling"):
            phrasings = bank[code][source]
            assert len(phrasings) >= 3 and len(set(phrasings)) == len(phrasings), (code, source)
            assert not set(phrasings) & set(bank["en"][source]), (code, source)


def test_unknown_language_falls_back_to_english_prompts():
    assert prompts_for("xx", "know") == prompts_for("en", "know")
