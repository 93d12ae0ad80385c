"""Retry policies and pools where a step needs them: every network-bound step carries the one retry policy
(exponential backoff with jitter, its retries and delay read from the settings when a step fails), the model steps
the GPU pool, and local-only steps neither. A step whose server fails once is retried in the run's process and
succeeds; an in-process model failing is not retried."""

from __future__ import annotations

import threading
import time

import dagster as dg
import pytest
from dagster._core.definitions.dependency import NodeHandle

from mella_assets.definitions import defs, stage_asset_modules
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.vlm import VisionLanguageModel
from mella_assets.ling.assets import mllm_captions
from mella_assets.resources.lake import Lake
from mella_assets.resources.models import Captioner
from mella_assets.specs import COMMONCRAWL_POOL, DATASET_SPLITS_POOL, GPU_POOL, NETWORK_RETRY, NetworkRetryPolicy
from support.openai_server import ChatCompletionsServer
from support.stored_images import store_png_images

# Steps that wait on another host: downloads of registered WARCs, the columnar index, range reads, image hosts, and
# the model steps (an OpenAI-compatible server when their backend is remote).
NETWORK_STEPS = {
    "crawl_sources",
    "cc_selection",
    "raw_crawl",
    "images",
    "mllm_captions",
    "translations",
    "evaluation_scores",
}
MODEL_STEPS = {"mllm_captions", "translations", "evaluation_scores", "finetuned_checkpoint"}
# Pools: one GPU slot per model step; the range reads of Common Crawl share the `commoncrawl` pool; one language's
# split at a time reads the others' (mella_dataset).
POOLS = {
    **dict.fromkeys(MODEL_STEPS, GPU_POOL),
    "raw_crawl": COMMONCRAWL_POOL,
    "mella_dataset": DATASET_SPLITS_POOL,
}


def stage_assets() -> dict[str, dg.AssetsDefinition]:
    assets = dg.load_assets_from_modules(stage_asset_modules())
    return {asset.node_def.name: asset for asset in assets if isinstance(asset, dg.AssetsDefinition)}


def test_network_bound_steps_carry_the_retry_policy_model_steps_the_gpu_pool_and_local_steps_neither():
    assets = stage_assets()
    assert set(assets) >= NETWORK_STEPS | MODEL_STEPS | set(POOLS)
    for name, asset in assets.items():
        op = asset.node_def
        assert op.retry_policy is (NETWORK_RETRY if name in NETWORK_STEPS else None), name
        assert op.pool == POOLS.get(name), name
    # The jobs the code location serves run them with the policy (what the executor asks when a step fails).
    pipeline = defs.resolve_job_def("shard_pipeline_job")
    assert pipeline.get_retry_policy_for_handle(NodeHandle("images", None)) is NETWORK_RETRY
    assert pipeline.get_retry_policy_for_handle(NodeHandle("alt_text_pairs", None)) is None


def test_the_policy_reads_its_settings_when_a_step_fails_and_backs_off_with_jitter(monkeypatch):
    monkeypatch.delenv("MELLA_RETRY_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MELLA_RETRY_DELAY_S", raising=False)
    policy = NetworkRetryPolicy()
    assert (policy.max_retries, policy.delay) == (3, 30.0)
    monkeypatch.setenv("MELLA_RETRY_MAX_RETRIES", "0")
    monkeypatch.setenv("MELLA_RETRY_DELAY_S", "2")
    assert (policy.max_retries, policy.delay) == (0, 2.0)
    # Exponential backoff (delay, 3 x, 7 x) with up to one delay of jitter either way.
    for attempt, base in ((1, 2.0), (2, 6.0), (3, 14.0)):
        waits = [policy.calculate_delay(attempt) for _ in range(200)]
        assert all(base - 2.0 <= wait <= base + 2.0 for wait in waits), attempt
        assert len({round(wait, 6) for wait in waits}) > 100  # jittered, not one fixed wait
    monkeypatch.setenv("MELLA_RETRY_DELAY_S", "-1")
    with pytest.raises(ValueError, match="MELLA_RETRY_DELAY_S must be a number of seconds, 0 or more"):
        policy.calculate_delay(1)


class DownForTheFirstRequests(ChatCompletionsServer):
    """The chat-completions server, answering 503 to its first ``down`` requests (a server restarting)."""

    def __init__(self, down: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.down, self._down_lock = down, threading.Lock()

    def _respond(self, request, body, digest, number, first_time) -> int:
        with self._down_lock:
            refuse, self.down = self.down > 0, self.down - 1
        if refuse:
            return self._answer(request, digest, 503, {"error": {"message": "loading the model"}})
        return super()._respond(request, body, digest, number, first_time)


def store_two_images(root) -> list[str]:
    return store_png_images(root, 2, red_step=80)


def event_types(result: dg.ExecuteInProcessResult) -> list[str]:
    return [event.event_type_value for event in result.all_events]


def test_a_step_whose_server_fails_once_is_retried_in_process_and_succeeds(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("MELLA_RETRY_MAX_RETRIES", "2")
    monkeypatch.setenv("MELLA_RETRY_DELAY_S", "1")
    shas = store_two_images(tmp_path)
    vlm = VisionLanguageModel.from_pretrained(str(tiny.captioner))
    # The first attempt sends 4 requests: the batch of two, then each image alone (one bad item costs only itself);
    # with the client's own retries off, all four 503s fail the step: "the model raised on every one".
    with DownForTheFirstRequests(4, captioner=vlm) as server:
        captioner = Captioner(backend="openai", url=server.url, model="tiny-captioner", max_retries=0,
                              concurrency=2, max_new_tokens=6)  # fmt: skip
        started = time.monotonic()
        result = dg.materialize([mllm_captions], partition_key="cs",
                                resources={"lake": Lake(root=str(tmp_path)), "captioner": captioner})  # fmt: skip
        seconds = time.monotonic() - started
    assert result.success
    types = event_types(result)
    assert types.count("STEP_UP_FOR_RETRY") == 1 and types.count("STEP_RESTARTED") == 1
    assert "STEP_FAILURE" not in types
    assert server.log.statuses[503] == 4 and server.log.statuses[200] == 2
    assert sorted(LakeStore(tmp_path).read_table("mllm_captions", "cs")["image_sha256"]) == sorted(shas)
    assert seconds < 60  # the wait is the setting's (0-2 s), not the default 30 s


def captions_failing_at_once(tmp_path, monkeypatch, captioner: Captioner) -> str:
    """Materialize ``mllm_captions`` with ``captioner`` under a retry policy of three 30 s waits; assert the step
    failed once, without a retry nor its wait, and give the failure's message."""
    monkeypatch.setenv("MELLA_RETRY_MAX_RETRIES", "3")
    monkeypatch.setenv("MELLA_RETRY_DELAY_S", "30")
    started = time.monotonic()
    result = dg.materialize([mllm_captions], partition_key="cs", raise_on_error=False,
                            resources={"lake": Lake(root=str(tmp_path)), "captioner": captioner})  # fmt: skip
    assert not result.success
    types = event_types(result)
    assert "STEP_UP_FOR_RETRY" not in types and types.count("STEP_FAILURE") == 1
    assert time.monotonic() - started < 25  # no 30 s retry wait
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    return failure.step_failure_data.error.message


def test_a_server_refusing_the_key_fails_the_step_at_once_without_retries(tiny, tmp_path, monkeypatch):
    """401 is a configuration error, not an outage: the network retry policy's waits would only delay the news."""
    store_two_images(tmp_path)
    vlm = VisionLanguageModel.from_pretrained(str(tiny.captioner))
    with ChatCompletionsServer(captioner=vlm, api_key="the-right-key") as server:
        captioner = Captioner(backend="openai", url=server.url, model="tiny-captioner", api_key="a-wrong-key",
                              max_retries=0, max_new_tokens=6)  # fmt: skip
        assert "HTTP 401" in captions_failing_at_once(tmp_path, monkeypatch, captioner)


def test_an_in_process_model_failing_is_not_retried(tmp_path, monkeypatch):
    store_two_images(tmp_path)
    captioner = Captioner(backend="transformers", model="lake://models/missing/captioner")
    message = captions_failing_at_once(tmp_path, monkeypatch, captioner)
    assert "model lake://models/missing/captioner is not in the lake" in message
