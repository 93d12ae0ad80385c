"""The OpenAI-compatible backend against a loopback chat-completions server that serves the tiny models through
the same transformers code: same outputs as in-process, retries on 429 / 500 (Retry-After honoured), timeouts on
a stalling server, no duplicate records, concurrency limit, API key handling, selection through resources."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from PIL import Image

from mella_assets.demo.tiny_models import TinyModels
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.openai_backend import (
    BackendUnavailable,
    ChatCompletionsClient,
    ItemError,
    OpenAICaptioner,
    OpenAITranslator,
    chat_completions_url,
    image_data_url,
    parse_retry_after,
)
from mella_assets.lib.vlm import VisionLanguageModel, load_caption_prompt, open_rgb_image
from mella_assets.ling.assets import mllm_captions, translations
from mella_assets.ling.translation import Translator
from mella_assets.resources import build_resources
from mella_assets.resources.lake import Lake
from mella_assets.resources.langid import LanguageIdentification
from mella_assets.resources.models import Captioner
from mella_assets.resources.models import Translator as TranslatorResource
from support.openai_server import ChatCompletionsServer, Faults
from support.stored_images import store_png_images

PROMPT = load_caption_prompt().text
TEXTS = ["A red tram crosses the bridge. Two children play.", "A woman reads a newspaper.", "", "Snow covers roofs."]


@pytest.fixture(scope="module")
def vlm(tiny: TinyModels) -> VisionLanguageModel:
    return VisionLanguageModel.from_pretrained(str(tiny.captioner))


@pytest.fixture(scope="module")
def translator(tiny: TinyModels) -> Translator:
    return Translator.from_pretrained(str(tiny.translator))


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    return [Image.new("RGB", (36 + 9 * i, 30 + 5 * i), (40 * i, 120, 220 - 30 * i)) for i in range(6)]


@pytest.fixture(scope="module")
def local_captions(vlm, pictures):
    return vlm.generate(pictures, [PROMPT] * len(pictures), max_new_tokens=10, batch_size=len(pictures))


def client(server: ChatCompletionsServer, model: str, **options) -> ChatCompletionsClient:
    return ChatCompletionsClient(server.url, model, **{"concurrency": 3, "timeout_s": 30, "backoff_s": 0.01, **options})


def test_captions_over_the_server_equal_in_process_captions_with_token_counts(vlm, pictures, local_captions):
    with ChatCompletionsServer(captioner=vlm) as server:
        remote = OpenAICaptioner(client(server, "tiny-captioner"))
        assert remote.generate(pictures, [PROMPT] * len(pictures), max_new_tokens=10) == local_captions
        assert server.log.max_in_flight <= 3
        assert server.log.statuses == {200: len(pictures)}
    assert remote.version == "openai:tiny-captioner"


def test_translations_over_the_server_equal_in_process_translations(translator):
    local = translator.translate(TEXTS, "ces_Latn", max_new_tokens=12)
    with ChatCompletionsServer(translator=translator) as server:
        remote = OpenAITranslator(client(server, "tiny-translator"))
        assert remote.translate(TEXTS, "ces_Latn", max_new_tokens=12) == local
        assert server.log.model_calls == 3  # the empty text is not sent
    assert local[2] == "" and all(local[i] for i in (0, 1, 3))


def test_intermittent_429_and_500_are_retried_and_retry_after_is_honoured(vlm, pictures, local_captions):
    with ChatCompletionsServer(captioner=vlm, faults=Faults(error_every=3, retry_after="1")) as server:
        remote = OpenAICaptioner(client(server, "tiny-captioner"))
        assert remote.generate(pictures, [PROMPT] * len(pictures), max_new_tokens=10) == local_captions
    statuses = server.log.statuses
    assert statuses[429] >= 1 and statuses[500] >= 1 and statuses[200] == len(pictures)
    assert remote.client.stats["retries"] == statuses[429] + statuses[500]
    # after each 429 with Retry-After: 1, the same request comes back no sooner than a second later
    for n, (digest, when, status) in enumerate(server.log.events):
        if status == 429:
            retry = next(at for d, at, _ in server.log.events[n + 1 :] if d == digest)
            assert retry - when >= 0.95


def test_a_stalling_server_is_timed_out_and_retried_without_duplicate_records(tiny, tmp_path, vlm):
    shas = store_png_images(tmp_path, 5, red_step=50)
    # every request stalls 2 s without answering the first time it is seen; the client gives up after 0.4 s
    with ChatCompletionsServer(captioner=vlm, faults=Faults(stall_first_s=2.0)) as server:
        captioner = Captioner(backend="openai", url=server.url, model="tiny-captioner", timeout_s=0.4,
                              concurrency=2, max_new_tokens=10)  # fmt: skip
        result = dg.materialize([mllm_captions], partition_key="cs",
                                resources={"lake": Lake(root=str(tmp_path)), "captioner": captioner})  # fmt: skip
    assert result.success
    (event,) = [
        e for e in result.asset_materializations_for_node("mllm_captions") if e.asset_key.path == ["mllm_captions"]
    ]
    meta = {name: value.value for name, value in event.metadata.items()}
    assert (meta["rows_out"], meta["cache_misses"], meta["backend"]) == (5, 5, "openai")
    rows = LakeStore(tmp_path).read_table("mllm_captions", "cs")
    assert sorted(rows["image_sha256"]) == sorted(shas) and rows["image_sha256"].n_unique() == 5
    assert sum(1 for _ in (tmp_path / "cache" / "captions").rglob("*.json")) == 5
    # A retry that itself outlives the 0.4 s timeout on a loaded machine makes the server answer an image twice;
    # what must hold is that no record or cache entry is duplicated (above) and every image was answered.
    assert server.log.statuses[200] >= 5 and server.log.model_calls >= 5


def test_translations_asset_over_a_flaky_server_keeps_one_row_per_caption(translator, tmp_path):
    store = LakeStore(tmp_path)
    captions = ["A red tram crosses the bridge.", "A woman reads a newspaper.", "Snow covers roofs.", "Two boats."]
    store.write_table("mllm_captions", "cs", pl.DataFrame({"image_sha256": [f"{i:064x}" for i in range(4)],
                                                           "caption_en": captions}))  # fmt: skip
    with ChatCompletionsServer(translator=translator, faults=Faults(error_every=2, retry_after="0")) as server:
        resource = TranslatorResource(backend="openai", url=server.url, model="tiny-translator",
                                      enforce_output_language=False, max_new_tokens=12)  # fmt: skip
        result = dg.materialize([translations], partition_key="cs", resources={
            "lake": Lake(root=str(tmp_path)), "translator": resource, "langid": LanguageIdentification()})  # fmt: skip
    assert result.success and server.log.statuses[429] + server.log.statuses[500] >= 2
    every = pl.concat([store.read_table("translations", "cs"), store.read_table("translation_rejects", "cs")],
                      how="diagonal")  # fmt: skip
    assert sorted(every["caption_en"]) == sorted(captions)
    local = dict(zip(captions, translator.translate(captions, "ces_Latn", max_new_tokens=12), strict=True))
    assert {row["caption_en"]: row["text"] for row in every.iter_rows(named=True)} == local


def test_a_server_that_keeps_failing_raises_after_exponential_backoff(vlm, pictures):
    waits: list[float] = []
    with ChatCompletionsServer(captioner=vlm, faults=Faults(error_every=1, retry_after=None)) as server:
        failing = client(server, "tiny-captioner", max_retries=3, backoff_s=0.01, sleep=waits.append)
        with pytest.raises(BackendUnavailable, match="gave up after 4 attempts"):
            failing.complete([{"role": "user", "content": "hi"}], 4)
    assert waits == [0.01, 0.02, 0.04]


def test_a_refused_item_becomes_an_item_error_and_a_bad_key_stops_the_run(vlm, pictures):
    with ChatCompletionsServer(captioner=vlm, api_key="s3cret-key") as server:
        unknown = OpenAICaptioner(client(server, "no-such-model", api_key_env="TEST_MELLA_KEY", api_key="s3cret-key"))
        (refused,) = unknown.generate(pictures[:1], [PROMPT], max_new_tokens=4)
        assert isinstance(refused, ItemError) and refused.reason == "backend_rejected" and "400" in refused.detail
        wrong = client(server, "tiny-captioner", api_key_env="TEST_MELLA_OTHER_KEY")
        with pytest.raises(BackendUnavailable, match=r"HTTP 401 \(is \$TEST_MELLA_OTHER_KEY set"):
            wrong.complete([{"role": "user", "content": "hi"}], 4)
    assert "s3cret" not in repr(unknown.client) and "TEST_MELLA_KEY" in repr(unknown.client)


def test_the_backend_is_chosen_through_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("MELLA_CAPTIONER_BACKEND", "openai")
    monkeypatch.setenv("MELLA_CAPTIONER_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("MELLA_CAPTIONER_MODEL", "Qwen/Qwen2-VL-2B-Instruct")
    monkeypatch.setenv("MELLA_TRANSLATOR_BACKEND", "openai")
    monkeypatch.setenv("MELLA_TRANSLATOR_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MELLA_TRANSLATOR_MODEL", "Qwen/Qwen2.5-7B-Instruct")
    resources = build_resources(lake_root=str(tmp_path))
    captioner, translator = resources["captioner"], resources["translator"]
    remote = captioner.load(captioner.model_path(lambda model: model))
    assert isinstance(remote, OpenAICaptioner) and remote.client.endpoint == "http://127.0.0.1:9/v1/chat/completions"
    assert captioner.version("Qwen/Qwen2-VL-2B-Instruct") == "openai:Qwen/Qwen2-VL-2B-Instruct"
    assert isinstance(translator.load(translator.model), OpenAITranslator)
    assert translator.version(translator.model) == "openai:Qwen/Qwen2.5-7B-Instruct:translate-v1"
    with pytest.raises(ValueError, match="needs a server URL"):
        Captioner(backend="openai", url="").load("m")


def test_endpoint_and_retry_after_parsing():
    assert chat_completions_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait


def _jpeg(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_stored_images_are_sent_as_their_own_bytes_and_oversized_ones_as_prepared_pixels(vlm):
    small, large = _jpeg((40, 30), (200, 40, 40)), _jpeg((120, 90), (20, 40, 200))
    with ChatCompletionsServer(captioner=vlm) as server:
        remote = OpenAICaptioner(client(server, "tiny-captioner", concurrency=1))
        outputs = remote.generate([open_rgb_image(small), open_rgb_image(large)], [PROMPT] * 2, max_new_tokens=4,
                                  max_pixels=60 * 60)  # fmt: skip
    assert not any(isinstance(output, ItemError) for output in outputs)
    sent_small, sent_large = server.log.image_urls
    assert sent_small == "data:image/jpeg;base64," + base64.b64encode(small).decode("ascii")
    # over max_pixels: downscaled by us and sent losslessly, never the stored file
    assert sent_large.startswith("data:image/png;base64,")
    assert server.log.vision_requests[1][1][0] * server.log.vision_requests[1][1][1] <= 60 * 60
    # a resized copy inherits the stored bytes in ``info`` but is not the stored file: its own pixels go
    resized = open_rgb_image(small).resize((20, 15))
    assert image_data_url(resized).startswith("data:image/png;base64,")


def test_a_caption_or_translation_cut_at_max_tokens_is_the_items_reject_but_an_evaluation_answer_is_kept(
    vlm, translator, pictures
):
    with ChatCompletionsServer(captioner=vlm, translator=translator, faults=Faults(report_length=True)) as server:
        # random tiny models never stop early: every answer uses all of its 3 tokens
        captions = OpenAICaptioner(client(server, "tiny-captioner")).generate(pictures[:2], [PROMPT] * 2, 3)
        answers = OpenAICaptioner(client(server, "tiny-captioner"), reject_truncated=False).generate(
            pictures[:2], [PROMPT] * 2, 3
        )
        translations = OpenAITranslator(client(server, "tiny-translator")).translate(TEXTS, "ces_Latn", 2)
    assert all(isinstance(c, ItemError) and c.reason == "output_truncated" for c in captions)
    assert all(not isinstance(a, ItemError) and a.text for a in answers)
    assert [t.reason if isinstance(t, ItemError) else t for t in translations] == [
        "output_truncated", "output_truncated", "", "output_truncated"
    ]  # fmt: skip
