import json

import pytest

from mella_assets.languages import DEFAULT_LANGUAGE_CODES, load_languages
from mella_assets.partitions import LANGUAGE_PARTITIONS


def test_the_paper_languages_are_the_default_partitions():
    assert LANGUAGE_PARTITIONS.get_partition_keys() == ["ar", "cs", "hu", "ko", "ru", "sr", "th", "vi"]
    assert list(load_languages("")) == list(DEFAULT_LANGUAGE_CODES)


def test_registry_facts_of_design_section_4():
    languages = load_languages("")
    assert {c: lang.nllb_code for c, lang in languages.items()} == {
        "ar": "arb_Arab", "cs": "ces_Latn", "hu": "hun_Latn", "ko": "kor_Hang",
        "ru": "rus_Cyrl", "sr": "srp_Cyrl", "th": "tha_Thai", "vi": "vie_Latn",
    }  # fmt: skip
    assert languages["sr"].scripts == ("Cyrl", "Latn")
    assert languages["sr"].labels == ("sr", "hr", "bs")
    assert {c for c, lang in languages.items() if lang.stemmer} == {"ar", "cs", "hu", "ru", "sr"}
    assert (languages["th"].word_tokenizer, languages["ko"].word_tokenizer) == ("pythainlp", "kiwi")


def test_a_deployment_can_choose_languages_including_ones_beyond_the_paper():
    assert list(load_languages("cs, uk,sw")) == ["cs", "uk", "sw"]


def test_unknown_languages_are_described_in_a_file(tmp_path):
    with pytest.raises(ValueError, match="MELLA_LANGUAGES_FILE"):
        load_languages("cs,yo")
    extra = tmp_path / "languages.json"
    extra.write_text(json.dumps([{"code": "yo", "name": "Yoruba", "scripts": ["Latn"], "nllb_code": "yor_Latn"}]))
    languages = load_languages("cs,yo", str(extra))
    assert languages["yo"].nllb_code == "yor_Latn"
    assert languages["yo"].scripts == ("Latn",)


def test_a_languages_file_with_unknown_fields_is_refused(tmp_path):
    extra = tmp_path / "languages.json"
    extra.write_text(json.dumps([{"code": "yo", "name": "Yoruba", "scripts": ["Latn"], "nllb": "yor_Latn"}]))
    with pytest.raises(ValueError, match="unknown Language fields"):
        load_languages("yo", str(extra))
