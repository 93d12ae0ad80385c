import os
import socket

import pytest

# No model hub in tests or CI: every model is a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# Network steps retry only where a test asks (tests/test_dagster_conventions.py): a failure shows at once, and a
# retry never hides a flaky test or changes what a failing run leaves behind.
os.environ.setdefault("MELLA_RETRY_MAX_RETRIES", "0")
# The suite's language runs use one shard per language (partition keys "cs|00"), so a test's pages, counts and
# metadata are the language's; tests/test_shards.py runs several shards (in their own processes, since the shard
# count is fixed when the code location is imported). MELLA_SHARDS=4 pytest … runs the suite sharded.
os.environ.setdefault("MELLA_SHARDS", "1")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny random-weight VLM and translator, built once for the session (tests only read them)."""
    from mella_assets.demo.tiny_models import SAMPLE_TEXTS, build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny"), SAMPLE_TEXTS, seed=0)


SFT_PROMPT = "Describe the image."


@pytest.fixture(scope="session")
def train_file(tmp_path_factory):
    """A JSONL of 12 SFT examples: a small distinct image each, one prompt, native answers in several scripts."""
    import json

    from PIL import Image

    from mella_assets.demo.tiny_models import SAMPLE_TEXTS

    folder = tmp_path_factory.mktemp("sft-data")
    lines = []
    for index, answer in enumerate(SAMPLE_TEXTS[6:18]):
        path = folder / f"{index}.png"
        Image.new("RGB", (48 + index, 40), (20 * index, 200 - 10 * index, 100)).save(path)
        lines.append(json.dumps({"image": str(path), "prompt": SFT_PROMPT, "answer": answer}, ensure_ascii=False))
    train = folder / "train.jsonl"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return train


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto_server S3 API on loopback with the bucket ``mella``, its credentials in the environment."""
    from support.s3 import MotoServer, apply_env, restore_env

    with MotoServer() as server:
        previous = apply_env(server.env)
        server.create_bucket("mella")
        yield server
        restore_env(previous)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The whole graph materialized once for every configured language on the demo corpus with the tiny models,
    through a Dagster instance in a temporary DAGSTER_HOME (shared by the end-to-end tests)."""
    import dagster as dg

    from mella_assets.definitions import build_definitions
    from mella_assets.demo.cc_crawl import DEMO_CRAWL, build_demo_crawl
    from mella_assets.demo.corpus import build_demo_corpus, demo_texts
    from mella_assets.demo.resources import demo_resources
    from mella_assets.demo.run import materialize_everything
    from mella_assets.demo.site import ensure_demo_site_server
    from mella_assets.demo.tiny_models import build_tiny_models
    from mella_assets.languages import LANGUAGES
    from mella_assets.lib.lake import LakeStore
    from mella_assets.resources import Training

    codes = list(LANGUAGES)
    root = tmp_path_factory.mktemp("demo")
    lake_root, home = root / "lake", root / "dagster_home"
    home.mkdir()
    port = free_port()
    build_demo_corpus(lake_root, f"http://127.0.0.1:{port}", codes)
    # As `mella demo`: one WARC per language goes through the demo crawl's index, cc_selection and range reads.
    cc_root = build_demo_crawl(lake_root, codes)
    saved = {name: os.environ.get(name) for name in ("MELLA_CC_INDEX", "MELLA_CC_WARC_BASE")}
    os.environ["MELLA_CC_INDEX"] = os.environ["MELLA_CC_WARC_BASE"] = str(cc_root)
    ensure_demo_site_server(lake_root / "demo" / "site", port)
    build_tiny_models(lake_root / "models" / "tiny", demo_texts(codes))
    resources = demo_resources(str(lake_root), port)
    # Full fine-tuning shows learning on a random tiny model within seconds (a LoRA adapter barely moves it).
    resources["training"] = Training(method="full", max_steps=60)
    defs = build_definitions(resources)
    instance = dg.DagsterInstance.local_temp(str(home))
    seconds = materialize_everything(codes, defs=defs, instance=instance, log=lambda line: None, crawls=(DEMO_CRAWL,))
    yield {
        "lake": LakeStore(lake_root),
        "defs": defs,
        "instance": instance,
        "home": home,
        "port": port,
        "codes": codes,
        "seconds": seconds,
        "site_dir": lake_root / "demo" / "site",
        "models_dir": lake_root / "models" / "tiny",
    }
    instance.dispose()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
