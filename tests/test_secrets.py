"""Secrets never logged (issue #8): with an API key and S3 credentials in the environment, a real run against a
real chat-completions server and a real S3 API leaves neither in Python logs (every logger at DEBUG, botocore and
urllib3 included), stdout / stderr, Dagster's event log, materialization metadata, error messages, or the repr of
any resource, client or store."""

from __future__ import annotations

import hashlib
import io
import logging
import secrets

import dagster as dg
import duckdb
import polars as pl
import pytest
from PIL import Image

from mella_assets.demo.tiny_models import SAMPLE_TEXTS, build_tiny_models
from mella_assets.know.images import image_key
from mella_assets.lib.catalog import run_sql
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.openai_backend import BackendUnavailable, ChatCompletionsClient
from mella_assets.lib.vlm import VisionLanguageModel
from mella_assets.ling.assets import mllm_captions
from mella_assets.resources.lake import Lake
from mella_assets.resources.models import Captioner
from support.openai_server import ChatCompletionsServer
from support.s3 import MotoServer

API_KEY = "sk-mella-" + secrets.token_hex(16)
WRONG_KEY = "sk-wrong-" + secrets.token_hex(16)
S3_SECRET = "s3-secret-" + secrets.token_hex(16)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG: the strictest setting a user could run with."""
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "botocore", "boto3", "s3fs", "fsspec", "aiobotocore", "dagster"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _everything_printed(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture) -> str:
    out, err = capfd.readouterr()
    records = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    return "\n".join([out, err, caplog.text, records])


def _lake_with_images(root: str, count: int = 2) -> None:
    store = LakeStore(root)
    shas = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 32 + i), (60 * i, 90, 30)).save(buffer, format="PNG")
        sha = hashlib.sha256(buffer.getvalue()).hexdigest()
        store.put_bytes(image_key(sha, "png"), buffer.getvalue())
        shas.append(sha)
    store.write_table(
        "images",
        "cs",
        pl.DataFrame(
            {
                "image_url": [f"https://a.invalid/{s}" for s in shas],
                "image_sha256": shas,
                "image_key": [image_key(s, "png") for s in shas],
            }
        ),
    )


@pytest.fixture(scope="module")
def vlm(tmp_path_factory) -> VisionLanguageModel:
    tiny = build_tiny_models(tmp_path_factory.mktemp("tiny"), SAMPLE_TEXTS, seed=0)
    return VisionLanguageModel.from_pretrained(str(tiny.captioner))


def test_the_api_key_reaches_the_server_but_no_log_event_or_repr(vlm, tmp_path, monkeypatch, debug_logs, capfd):
    monkeypatch.setenv("MELLA_CAPTIONER_API_KEY", API_KEY)
    _lake_with_images(str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    with ChatCompletionsServer(captioner=vlm, api_key=API_KEY) as server:
        captioner = Captioner(backend="openai", url=server.url, model="tiny-captioner", max_new_tokens=4)
        lake = Lake(root=str(tmp_path))
        result = dg.materialize(
            [mllm_captions], partition_key="cs", resources={"lake": lake, "captioner": captioner}, instance=instance
        )
        client = ChatCompletionsClient(
            server.url, "tiny-captioner", api_key_env="MELLA_CAPTIONER_API_KEY", api_key=API_KEY
        )
        reprs = [repr(captioner), repr(lake), repr(client), str(captioner.model_dump()), repr(lake.store)]
    assert result.success
    assert server.log.statuses[200] == 2 and server.log.statuses[401] == 0  # the key was sent, and accepted
    event_log = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    assert "mllm_captions" in event_log  # the event log is really there to search
    metadata = str(result.asset_materializations_for_node("mllm_captions")[0].metadata)
    printed = _everything_printed(debug_logs, capfd)
    cached = "\n".join(p.read_text() for p in tmp_path.rglob("*.json"))
    for text in (event_log, metadata, printed, cached, *reprs):
        assert API_KEY not in text


def test_a_rejected_key_is_named_by_its_variable_never_by_its_value(vlm, tmp_path, monkeypatch, debug_logs, capfd):
    monkeypatch.setenv("MELLA_CAPTIONER_API_KEY", WRONG_KEY)
    monkeypatch.setenv("MELLA_RETRY_MAX_RETRIES", "0")  # a remote model step's failure would be retried after 30 s
    _lake_with_images(str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    with ChatCompletionsServer(captioner=vlm, api_key=API_KEY) as server:
        captioner = Captioner(backend="openai", url=server.url, model="tiny-captioner", max_retries=0)
        result = dg.materialize(
            [mllm_captions],
            partition_key="cs",
            resources={"lake": Lake(root=str(tmp_path)), "captioner": captioner},
            instance=instance,
            raise_on_error=False,
        )
        client = ChatCompletionsClient(
            server.url, "tiny-captioner", api_key_env="MELLA_CAPTIONER_API_KEY", api_key=WRONG_KEY
        )
        with pytest.raises(BackendUnavailable) as raised:
            client.complete([{"role": "user", "content": "hi"}], 4)
    assert not result.success and server.log.statuses[401] >= 1
    failure = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    assert "$MELLA_CAPTIONER_API_KEY" in str(raised.value) and "401" in failure
    for text in (failure, str(raised.value), repr(raised.value.__cause__), _everything_printed(debug_logs, capfd)):
        assert WRONG_KEY not in text and API_KEY not in text


def test_s3_credentials_stay_out_of_logs_errors_and_reprs(tmp_path, monkeypatch, debug_logs, capfd):
    with MotoServer() as server:
        for name, value in {**server.env, "AWS_SECRET_ACCESS_KEY": S3_SECRET}.items():
            monkeypatch.setenv(name, value)
        server.create_bucket("mella")
        store = LakeStore("s3://mella/secrets-test", cache_dir=tmp_path / "cache")
        store.write_table("d_know", "cs", pl.DataFrame({"language": ["cs"], "alt_text": ["Karlův most"]}))
        store.put_bytes("landing/cs/a.warc.gz", b"bytes")
        assert store.local_path("landing/cs/a.warc.gz").read_bytes() == b"bytes"
        assert run_sql(store, "SELECT alt_text FROM d_know").rows() == [("Karlův most",)]
        with pytest.raises(duckdb.Error) as failed_query:
            run_sql(store, "SELECT no_such_column FROM d_know")
        reprs = [repr(store), repr(Lake(root="s3://mella/secrets-test")), repr(store._fs)]
    printed = _everything_printed(debug_logs, capfd)
    assert "PUT" in printed or "put" in printed.lower()  # botocore's DEBUG lines really were captured
    for text in (printed, str(failed_query.value), *reprs):
        assert S3_SECRET not in text
