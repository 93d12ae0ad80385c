"""Translation for D_ling: language codes, Serbian script, long captions, batching, the cache and QA reasons."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from mella_assets.demo.tiny_models import SAMPLE_TEXTS, build_tiny_models
from mella_assets.languages import DEFAULT_LANGUAGE_CODES, LANGUAGES, REGISTRY
from mella_assets.lib.cache import JsonCache
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.langid import LanguageIdentifier
from mella_assets.lib.watchdog import stage_deadline
from mella_assets.ling.assets import translations
from mella_assets.ling.translation import (
    Translator,
    nllb_language_name,
    split_for_translation,
    translate_cached,
    transliterate_serbian_to_latin,
)
from mella_assets.ling.translation_qa import check_translation, check_translations, length_bounds
from mella_assets.resources.lake import Lake
from mella_assets.resources.langid import LanguageIdentification
from mella_assets.resources.models import Translator as TranslatorResource
from support.stage_deadline import Counting, DeadlineAfterCalls, RaisingOn

LONG_CAPTION = (
    "A red tram crosses the old stone bridge in the morning. Two children are playing football in a small park. "
    "The market sells fresh fruit, bread and flowers!"
)


@pytest.fixture(scope="module")
def tiny_translator_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_models(tmp_path_factory.mktemp("tiny"), SAMPLE_TEXTS, seed=0).translator)


@pytest.fixture(scope="module")
def translator(tiny_translator_path: str) -> Translator:
    return Translator.from_pretrained(tiny_translator_path)


@pytest.fixture(scope="module")
def identifier() -> LanguageIdentifier:
    return LanguageIdentifier("lingua", [REGISTRY[code] for code in DEFAULT_LANGUAGE_CODES])


def test_nllb_codes_of_the_eight_languages_are_the_flores200_codes():
    assert {code: REGISTRY[code].nllb_code for code in DEFAULT_LANGUAGE_CODES} == {
        "ar": "arb_Arab",
        "cs": "ces_Latn",
        "hu": "hun_Latn",
        "ko": "kor_Hang",
        "ru": "rus_Cyrl",
        "sr": "srp_Cyrl",
        "th": "tha_Thai",
        "vi": "vie_Latn",
    }
    assert nllb_language_name("kor_Hang") == "Korean"
    assert nllb_language_name("eng_Latn") == "English"


def test_every_language_code_is_forced_as_the_first_decoded_token(translator: Translator):
    encoded = translator._encode(["A red tram crosses the bridge."], "eng_Latn")
    for code in DEFAULT_LANGUAGE_CODES:
        nllb = REGISTRY[code].nllb_code
        target = translator.target_token_id(nllb)
        ids = translator.generate_ids(encoded, target, max_new_tokens=3)[0].tolist()
        # NLLB layout: decoder start (</s>), then the forced target-language code.
        assert ids[:2] == [translator.tokenizer.eos_token_id, target], code
        assert translator.tokenizer.convert_ids_to_tokens(target) == nllb


def test_serbian_transliteration_matches_the_official_table_letter_by_letter():
    cyrillic = "АБВГДЂЕЖЗИЈКЛЉМНЊОПРСТЋУФХЦЧЏШ"
    latin = ["A", "B", "V", "G", "D", "Đ", "E", "Ž", "Z", "I", "J", "K", "L", "Lj", "M", "N", "Nj", "O", "P", "R",
             "S", "T", "Ć", "U", "F", "H", "C", "Č", "Dž", "Š"]  # fmt: skip
    assert len(cyrillic) == len(latin) == 30
    for upper, expected in zip(cyrillic, latin, strict=True):
        assert transliterate_serbian_to_latin(upper + "а") == expected + "a", upper
        assert transliterate_serbian_to_latin(upper.lower()) == expected.lower(), upper
    assert transliterate_serbian_to_latin("ЏЕП И ЉУБАВ") == "DŽEP I LJUBAV"
    assert transliterate_serbian_to_latin("Ђорђе чита новине у кафани.") == "Đorđe čita novine u kafani."


def test_long_sentences_are_cut_at_clauses_then_spaces_and_rejoin_to_the_text():
    sentence = "one two three, four five six, seven eight nine ten eleven twelve."
    assert split_for_translation(sentence, max_chars=20) == [
        "one two three,",
        "four five six,",
        "seven eight nine ten",
        "eleven twelve.",
    ]
    text = f"Short one. {sentence} Last!"
    pieces = split_for_translation(text, max_chars=20)
    assert pieces[0] == "Short one." and pieces[-1] == "Last!"
    assert " ".join(pieces) == text
    assert split_for_translation(LONG_CAPTION) == [
        "A red tram crosses the old stone bridge in the morning.",
        "Two children are playing football in a small park.",
        "The market sells fresh fruit, bread and flowers!",
    ]


def test_a_long_caption_is_translated_sentence_by_sentence_and_reassembled_in_order(translator: Translator):
    whole = translator.translate([LONG_CAPTION], "ces_Latn", max_new_tokens=12)
    parts = [
        translator.translate([piece], "ces_Latn", max_new_tokens=12)[0] for piece in split_for_translation(LONG_CAPTION)
    ]
    assert all(parts)
    assert whole == [" ".join(parts)]


def test_batched_translation_equals_one_at_a_time(translator: Translator):
    texts = [LONG_CAPTION, "A woman reads a newspaper.", "", "Snow covers the roofs of the village church."]
    batched = translator.translate(texts, "hun_Latn", max_new_tokens=10, batch_size=8)
    assert translator.translate(texts, "hun_Latn", max_new_tokens=10, batch_size=1) == batched
    assert [translator.translate([t], "hun_Latn", max_new_tokens=10)[0] for t in texts] == batched
    assert batched[2] == ""


def test_translation_cache_reuses_finished_items_and_counts_hits_and_misses(translator: Translator, tmp_path):
    cache = JsonCache(LakeStore(tmp_path), "translations")
    loads: list[int] = []

    def load():
        loads.append(1)
        return translator

    params = {"max_new_tokens": 8}
    sources = ["A woman reads.", "Two children play.", "Two children play."]
    first, reasons, run = translate_cached(sources[:1], "ces_Latn", cache, "v1", load, params)
    assert (run.cache_hits, run.cache_misses, reasons) == (0, 1, [None])
    second, _, run = translate_cached(sources, "ces_Latn", cache, "v1", load, params)
    # the first comes from the cache; the new source asked twice is translated once
    assert (run.cache_hits, run.cache_misses) == (1, 1)
    assert second[0] == first[0] and second[1] == second[2]
    _, _, run = translate_cached(sources, "ces_Latn", cache, "v1", load, params)
    assert (run.cache_hits, run.cache_misses, len(loads)) == (3, 0, 2)
    _, _, run = translate_cached(sources, "vie_Latn", cache, "v1", load, params)  # another target: new keys
    assert run.cache_misses == 2


BRIDGE = "A red tram crosses the old stone bridge."
BRIDGE_RU = "Красный трамвай пересекает старый каменный мост."
BRIDGE_KO = "빨간 전차가 아침에 오래된 돌다리를 건넙니다."
PARK = "Two children are playing football in a small park near the river."


@pytest.mark.parametrize(
    ("code", "source", "output", "reason"),
    [
        ("cs", "A red tram crosses the bridge.", "   ", "empty_translation"),
        ("cs", "A red tram crosses the bridge.", "most most most most most most most most most", "repetition_loop"),
        ("th", "A red tram.", "รถรางรถรางรถรางรถรางรถรางรถรางรถรางรถราง", "repetition_loop"),
        ("cs", "A red tram crosses the old bridge.", "A red tram crosses the old bridge.", "untranslated_copy"),
        ("hu", "A red tram crosses the old bridge.", "a red tram crosses the bridge", "untranslated_copy"),
        ("cs", PARK, "Dvě děti.", "length_ratio_out_of_bounds"),
        ("ko", "A tram.", BRIDGE_KO + " 그리고 사람들이 많이 있습니다", "length_ratio_out_of_bounds"),
        ("cs", BRIDGE, BRIDGE_RU, "wrong_language"),
        ("ru", BRIDGE, BRIDGE_RU, None),
        ("ko", BRIDGE, BRIDGE_KO, None),
    ],
)  # fmt: skip
def test_each_qa_reason_is_produced_by_a_crafted_translation(identifier, code, source, output, reason):
    assert check_translation(source, output, LANGUAGES[code], identifier).reason == reason


def test_wrong_language_is_only_recorded_when_not_enforced(identifier):
    qa = check_translation("A red tram crosses the old stone bridge.", "Красный трамвай пересекает старый мост.",
                           LANGUAGES["cs"], identifier, enforce_language=False)  # fmt: skip
    assert (qa.reason, qa.language_ok, qa.detected_language) == (None, False, "ru")


def test_length_bounds_are_per_language_and_configurable(identifier):
    assert length_bounds("ko") == (0.15, 1.5)
    assert length_bounds("cs") == (0.33, 3.3)
    assert length_bounds("ko", {"ko": [0.1, 3.0]}) == (0.1, 3.0)
    with pytest.raises(ValueError, match="min < max"):
        length_bounds("ko", {"ko": [2.0, 1.0]})
    source, output = "A tram.", "빨간 전차가 아침에 오래된 돌다리를 건넙니다"
    assert check_translations([source], [output], LANGUAGES["ko"], identifier)[0].reason == "length_ratio_out_of_bounds"
    assert check_translations([source], [output], LANGUAGES["ko"], identifier, bounds=(0.1, 10.0))[0].reason is None


# -- the stage deadline and failing items: keep what is done ------------------------------------------------
# 20 captions, two of them the same text: chunks of 8 with batch_size=1 (CHUNK_BATCHES).
WORDS = ["boats", "trams", "dogs", "cars", "birds", "trees", "lamps", "bikes", "boys", "girls", "cats", "horses",
         "carts", "tents", "flags", "ducks", "geese", "clocks", "bells"]  # fmt: skip
CAPTIONS = [f"{n} {word} stand near the old bridge." for n, word in enumerate(WORDS, start=2)]
CAPTIONS.append(CAPTIONS[0])
PARAMS = {"max_new_tokens": 8}


def cached(backend, cache: JsonCache, sources=CAPTIONS):
    return translate_cached(sources, "ces_Latn", cache, "v1", lambda: backend, PARAMS, batch_size=1)


def test_a_deadline_mid_stage_keeps_finished_translations_and_the_rerun_translates_only_the_rest(translator, tmp_path):
    reference, _, _ = cached(translator, JsonCache(LakeStore(tmp_path), "reference"))
    cache = JsonCache(LakeStore(tmp_path), "translations")
    with stage_deadline("translations", seconds=3600):
        slow = DeadlineAfterCalls(translator, calls=1)  # the deadline passes while the first chunk runs
        texts, reasons, run = cached(slow, cache)
    assert slow.seen == [8]
    assert texts[:8] == reference[:8] and texts[8:19] == [None] * 11
    # The repeated caption shares its first occurrence's translation, finished before the deadline.
    assert reasons == [None] * 8 + ["stage_deadline"] * 11 + [None]
    assert texts[19] == reference[19] and run.failed == {"stage_deadline": 11}
    counting = Counting(translator)
    again, reasons_again, run_again = cached(counting, cache)
    assert counting.seen == [8, 3] and (run_again.cache_hits, run_again.cache_misses) == (9, 11)
    assert again == reference and reasons_again == [None] * 20


def test_a_caption_whose_translation_raises_costs_that_caption_and_a_model_failing_on_all_fails(translator, tmp_path):
    cache = JsonCache(LakeStore(tmp_path), "translations")
    reference, _, _ = cached(translator, JsonCache(LakeStore(tmp_path), "reference"))
    bad = CAPTIONS[3]
    failing = RaisingOn(translator, lambda text: text == bad, IndexError("index out of range in self"))
    texts, reasons, run = cached(failing, cache)
    assert reasons == [None] * 3 + ["translation_failed"] + [None] * 16
    assert texts[3] is None and [t for i, t in enumerate(texts) if i != 3] == reference[:3] + reference[4:]
    assert failing.seen == [8, *[1] * 8, 8, 3] and run.failed == {"translation_failed": 1}
    again, reasons_again, _ = cached(translator, cache)  # not cached: retried, and only it
    assert again == reference and reasons_again == [None] * 20
    broken = RaisingOn(translator, lambda text: True, ValueError("'ces_Latn' is not a language token"))
    with pytest.raises(RuntimeError, match="raised on every one of the 19 items"):
        cached(broken, JsonCache(LakeStore(tmp_path), "other"))


def test_a_translations_stage_past_its_deadline_writes_stage_deadline_rejects_and_the_rerun_completes_it(
    tiny_translator_path, tmp_path, monkeypatch
):
    store = LakeStore(tmp_path)
    shas = [f"{i:064x}" for i in range(3)]
    store.write_table("mllm_captions", "cs", pl.DataFrame({"image_sha256": shas, "caption_en": CAPTIONS[:3]}))
    resources = {"lake": Lake(root=str(tmp_path)), "langid": LanguageIdentification(),
                 "translator": TranslatorResource(model=tiny_translator_path, backend="transformers",
                                                  enforce_output_language=False, max_new_tokens=8)}  # fmt: skip
    monkeypatch.setenv("MELLA_STAGE_TIMEOUT_S_TRANSLATIONS", "0.001")  # past before the first chunk
    assert dg.materialize([translations], partition_key="cs", resources=resources).success
    rejects = store.read_table("translation_rejects", "cs")
    assert rejects.select("image_sha256", "reason").rows() == [(sha, "stage_deadline") for sha in shas]
    assert store.read_table("translations", "cs").is_empty()
    monkeypatch.delenv("MELLA_STAGE_TIMEOUT_S_TRANSLATIONS")
    assert dg.materialize([translations], partition_key="cs", resources=resources).success
    assert "stage_deadline" not in set(store.read_table("translation_rejects", "cs")["reason"])
    every = pl.concat([store.read_table("translations", "cs"), store.read_table("translation_rejects", "cs")],
                      how="diagonal")  # fmt: skip
    assert sorted(every["image_sha256"]) == shas
