"""Evaluation through either backend: ``evaluation_scores`` asks a loopback OpenAI-compatible server (serving the
tiny model under the base model's name and a checkpoint's id, as vLLM serves a base model and LoRA modules) and
gets the answers the in-process models give; cached answers are keyed by served name and checkpoint, so a new
checkpoint is never answered from an old one's cache; batched in-process generation equals one at a time."""

from __future__ import annotations

import dataclasses
import io
import shutil
from collections import Counter
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from PIL import Image

from mella_assets.evaluation.assets import evaluation_report, evaluation_scores
from mella_assets.know.images import image_key
from mella_assets.lib.checkpoints import write_latest_checkpoint
from mella_assets.lib.lake import LakeStore
from mella_assets.lib.vlm import VisionLanguageModel
from mella_assets.resources import Evaluator, Training, build_resources
from mella_assets.resources.lake import Lake
from mella_assets.tables import MELLA_DATASET
from support.openai_server import ChatCompletionsServer
from support.stage_deadline import DeadlineAfterCalls, RaisingOn

BASE_NAME = "tiny-base"
CHECKPOINT_A, CHECKPOINT_B = "a" * 16, "b" * 16
REFERENCES = ["Pražský hrad v zimě", "Karlův most v noci", "Staroměstské náměstí", "Vltava a hrad"]
PROMPTS = ["Co je na obrázku?", "Popište obrázek podrobně: předměty, prostředí, viditelný text.", "Co?", "Popište."]
RUN_CONFIG = {"ops": {"evaluation_scores": {"config": {"max_new_tokens": 6, "bootstrap_resamples": 50}}}}


@pytest.fixture(scope="module")
def vlm(tiny) -> VisionLanguageModel:
    return VisionLanguageModel.from_pretrained(str(tiny.captioner))


def build_lake(root: Path, tiny) -> LakeStore:
    """A lake with four test items of ``cs`` (two know, two ling; an image each) and the tiny base model."""
    store = LakeStore(root)
    rows = []
    for n, (reference, prompt) in enumerate(zip(REFERENCES, PROMPTS, strict=True)):
        buffer = io.BytesIO()
        Image.new("RGB", (40 + 6 * n, 32 + 4 * n), (60 * n, 120, 200 - 40 * n)).save(buffer, format="PNG")
        sha = f"{n:064x}"
        store.put_bytes(image_key(sha, "png"), buffer.getvalue())
        rows.append({"id": f"cs-{n}", "language": "cs", "source": "know" if n < 2 else "ling",
                     "source_table": "d_know" if n < 2 else "d_ling", "image_sha256": sha,
                     "image_key": image_key(sha, "png"), "phash": "0" * 16, "split_group": str(n), "split": "test",
                     "prompt": prompt, "text": reference, "caption_en": "", "keywords": reference.lower().split(),
                     "page_url": "", "domain": "a.cz", "image_url": "", "conversation": "[]"})  # fmt: skip
    store.write_table(MELLA_DATASET.name, "cs", pl.DataFrame(rows, schema=MELLA_DATASET.columns))
    return store


def publish_checkpoint(store: LakeStore, tiny, checkpoint: str, previous: dict | None = None) -> dict:
    """A full checkpoint ``checkpoints/<checkpoint>/`` (a copy of the tiny base model) as the latest one."""
    key = f"checkpoints/{checkpoint}"
    shutil.copytree(tiny.captioner, store.path(key), dirs_exist_ok=True)
    record = {"checkpoint_key": key, "method": "full", "base_model": str(tiny.captioner), "train_rows": 4}
    if previous is not None:
        record["previous_checkpoint"] = previous
    write_latest_checkpoint(store, record)
    return record


def evaluate(
    store: LakeStore, tiny, evaluator: Evaluator, instance: dg.DagsterInstance | None = None
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [evaluation_scores],
        partition_key="cs",
        run_config=RUN_CONFIG,
        instance=instance,
        resources={"lake": Lake(root=str(store.root)), "training": Training(base_model=str(tiny.captioner)),
                   "evaluator": evaluator},
    )  # fmt: skip


def scores_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = [e for e in result.asset_materializations_for_node("evaluation_scores")
                if e.asset_key.path == ["evaluation_scores"]]  # fmt: skip
    return {name: value.value for name, value in event.metadata.items()}


def outputs_by_model(store: LakeStore) -> dict[str, list[str]]:
    samples = store.read_table("evaluation_samples", "cs").sort("id")
    return {model: group["output"].to_list() for (model,), group in samples.group_by("model", maintain_order=True)}


def served(server: ChatCompletionsServer) -> Counter[str]:
    return Counter(model for model, _, _ in server.log.vision_requests)


def test_evaluation_scores_through_an_openai_server_equal_the_in_process_evaluation(tiny, vlm, tmp_path):
    store = build_lake(tmp_path / "lake", tiny)
    publish_checkpoint(store, tiny, CHECKPOINT_A)
    with ChatCompletionsServer(vlms={BASE_NAME: vlm, CHECKPOINT_A: vlm}) as server:
        evaluator = Evaluator(backend="openai", url=server.url, base_model_name=BASE_NAME, concurrency=2)
        result = evaluate(store, tiny, evaluator)
    assert result.success
    # One request per test item and model, each with the item's image and prompt.
    assert served(server) == {BASE_NAME: 4, CHECKPOINT_A: 4}
    sizes = [(40 + 6 * n, 32 + 4 * n) for n in range(4)]
    assert sorted((size, prompt) for _, size, prompt in server.log.vision_requests) == sorted(
        list(zip(sizes, PROMPTS, strict=True)) * 2
    )
    assert server.log.statuses == {200: 8}
    meta = scores_metadata(result)
    assert meta["backend"] == "openai" and meta["models"] == {"base": BASE_NAME, "finetuned": CHECKPOINT_A}
    assert meta["generated"] == {"base": 4, "finetuned": 4}
    scores = store.read_table("evaluation_scores", "cs")
    assert sorted(set(scores["model"])) == ["base", "finetuned"]
    assert scores.filter(pl.col("metric") == "chrf")["n_items"].to_list() == [2, 2]
    assert scores.filter(pl.col("metric") == "keyword_accuracy")["value"].null_count() == 0
    versions = dict(scores.select("model", "model_version").unique().iter_rows())
    assert versions == {"base": f"openai:{BASE_NAME}@{tiny.captioner}",
                        "finetuned": f"openai:{CHECKPOINT_A}@checkpoints/{CHECKPOINT_A}"}  # fmt: skip
    remote = outputs_by_model(store)
    # The in-process backend answers the same (the checkpoint is a copy of the base model): same code, same model.
    local = evaluate(store, tiny, Evaluator(backend="transformers"))
    assert local.success and scores_metadata(local)["generated"] == {"base": 4, "finetuned": 4}
    assert outputs_by_model(store) == remote
    expected = vlm.generate([Image.open(io.BytesIO(store.get_bytes(image_key(f"{n:064x}", "png")))) for n in range(4)],
                            PROMPTS, max_new_tokens=6, batch_size=1)  # fmt: skip
    assert remote["base"] == remote["finetuned"] == [g.text for g in expected]


def test_a_new_checkpoint_is_asked_under_its_own_name_and_old_answers_come_from_the_cache(tiny, vlm, tmp_path):
    store = build_lake(tmp_path / "lake", tiny)
    first = publish_checkpoint(store, tiny, CHECKPOINT_A)
    with ChatCompletionsServer(vlms={BASE_NAME: vlm, CHECKPOINT_A: vlm, CHECKPOINT_B: vlm}) as server:
        evaluator = Evaluator(backend="openai", url=server.url, base_model_name=BASE_NAME)
        assert evaluate(store, tiny, evaluator).success
        before = outputs_by_model(store)
        publish_checkpoint(store, tiny, CHECKPOINT_B, previous=first)
        result = evaluate(store, tiny, evaluator)
    assert result.success
    # Only the new checkpoint is asked: the base model's and the previous checkpoint's answers are cached under
    # their served names and checkpoint keys, whatever role they now play.
    assert served(server) == {BASE_NAME: 4, CHECKPOINT_A: 4, CHECKPOINT_B: 4}
    assert scores_metadata(result)["generated"] == {"base": 0, "previous": 0, "finetuned": 4}
    after = outputs_by_model(store)
    assert after["previous"] == before["finetuned"] and after["base"] == before["base"]
    compared = store.read_table("evaluation_scores", "cs").filter(pl.col("model") == "finetuned")
    assert set(compared["compared_to"]) == {"previous"}


def test_a_fixed_served_name_never_answers_a_new_checkpoint_from_the_old_cache(tiny, vlm, tmp_path):
    store = build_lake(tmp_path / "lake", tiny)
    first = publish_checkpoint(store, tiny, CHECKPOINT_A)
    with ChatCompletionsServer(vlms={BASE_NAME: vlm, "mella-latest": vlm}) as server:
        evaluator = Evaluator(backend="openai", url=server.url, base_model_name=BASE_NAME,
                              checkpoint_model_name="mella-latest")  # fmt: skip
        assert evaluate(store, tiny, evaluator).success
        publish_checkpoint(store, tiny, CHECKPOINT_B, previous=first)
        instance = dg.DagsterInstance.ephemeral()
        result = evaluate(store, tiny, evaluator, instance)
    assert result.success
    assert served(server) == {BASE_NAME: 4, "mella-latest": 8}  # the same name, a new checkpoint: asked again
    # A fixed name addresses only the latest checkpoint: the previous one is not evaluated, with a warning.
    assert set(outputs_by_model(store)) == {"base", "finetuned"}
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("the previous checkpoint is not evaluated" in message for message in logs)


def test_an_item_the_server_refuses_fails_evaluation_naming_it(tiny, vlm, tmp_path):
    store = build_lake(tmp_path / "lake", tiny)
    publish_checkpoint(store, tiny, CHECKPOINT_A)
    with ChatCompletionsServer(vlms={CHECKPOINT_A: vlm}) as server:  # the base model is not served: HTTP 400
        evaluator = Evaluator(backend="openai", url=server.url, base_model_name="not-served", max_retries=0)
        result = dg.materialize(
            [evaluation_scores], partition_key="cs", run_config=RUN_CONFIG, raise_on_error=False,
            resources={"lake": Lake(root=str(store.root)), "training": Training(base_model=str(tiny.captioner)),
                       "evaluator": evaluator},
        )  # fmt: skip
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    assert "not-served: the server refused 4 test item(s)" in error.message
    assert served(server) == {}


def test_the_evaluator_is_chosen_through_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MELLA_EVALUATION_BACKEND", "openai")
    monkeypatch.setenv("MELLA_EVALUATION_URL", "http://vllm:8000/v1")
    monkeypatch.setenv("MELLA_EVALUATION_API_KEY", "sk-evaluation-0123456789")
    monkeypatch.setenv("MELLA_BASE_MODEL", "Qwen/Qwen2-VL-2B-Instruct")
    monkeypatch.delenv("MELLA_EVALUATION_BASE_MODEL", raising=False)
    monkeypatch.delenv("MELLA_EVALUATION_CHECKPOINT_MODEL", raising=False)
    resources = build_resources(lake_root=str(tmp_path))
    evaluator, training = resources["evaluator"], resources["training"]
    assert isinstance(evaluator.api_key, dg.EnvVar) and evaluator.api_key == "MELLA_EVALUATION_API_KEY"
    base = evaluator.base(training.base_model, resolve=lambda model: pytest.fail("openai resolves no path"))
    assert (base.name, base.version) == (
        "Qwen/Qwen2-VL-2B-Instruct",
        "openai:Qwen/Qwen2-VL-2B-Instruct@Qwen/Qwen2-VL-2B-Instruct",
    )
    record = {"checkpoint_key": f"checkpoints/{CHECKPOINT_A}", "method": "lora"}
    finetuned = evaluator.checkpoint(record, local=lambda: pytest.fail("openai downloads no checkpoint"))
    assert (finetuned.name, finetuned.version) == (CHECKPOINT_A, f"openai:{CHECKPOINT_A}@checkpoints/{CHECKPOINT_A}")
    assert evaluator.addresses_each_checkpoint()
    assert "sk-evaluation" not in repr(evaluator)
    with pytest.raises(ValueError, match="needs a server URL"):
        Evaluator(backend="openai", url="").base("m", str)
    with pytest.raises(ValueError, match="unknown model backend"):
        Evaluator(backend="vllm").base("m", str)


def test_batched_in_process_generation_equals_one_at_a_time(vlm):
    """Left padding, the attention mask and the position ids it implies make every padded row of a batch decode
    exactly like the same item alone (greedy, fp32): prompts and images of very different lengths and sizes."""
    images = [
        Image.new("RGB", (24 + 17 * i, 20 + 9 * i), ((37 * i) % 256, 90 + 11 * i, 200 - 17 * i)) for i in range(11)
    ]
    prompts = [
        "Describe.",
        "Describe the image in detail: the objects, the setting, any visible text.",
        "Two children are playing football in a small park. What else do you see?",
        "Žena čte noviny?",
        "빨간 전차가 아침에",
        "A",
        "Describe the image in detail: the objects, the setting, any visible text. " * 2,
        "Снег",
        "ok",
        "ตลาดขายผลไม้สด",
        "Popište obrázek.",
    ]
    one = vlm.generate(images, prompts, max_new_tokens=12, batch_size=1)
    batched = vlm.generate(images, prompts, max_new_tokens=12, batch_size=8)
    assert [g.text for g in batched] == [g.text for g in one]
    assert batched == one  # token counts too
    assert len({g.prompt_tokens for g in one[:8]}) > 4  # the first batch really was padded


class DeadlineAfterTheFirstBaseBatch(Evaluator):
    """The in-process evaluator, whose base model's first batch runs into the stage deadline (as a slow one would)."""

    def base(self, base_model, resolve):
        model = super().base(base_model, resolve)
        return dataclasses.replace(model, load=lambda: DeadlineAfterCalls(model.load(), calls=1))


class BaseRaisesOnTheThirdImage(Evaluator):
    """The in-process evaluator, whose base model raises on one test image (46 x 36), as a processor might."""

    def base(self, base_model, resolve):
        model = super().base(base_model, resolve)
        bad = lambda image: image.size == (46, 36)  # noqa: E731
        return dataclasses.replace(model, load=lambda: RaisingOn(model.load(), bad, ValueError("odd image")))


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    return failure.step_failure_data.error.message


def test_evaluation_past_its_deadline_keeps_the_answers_and_fails_naming_what_is_left(tiny, vlm, tmp_path):
    store = build_lake(tmp_path / "lake", tiny)
    publish_checkpoint(store, tiny, CHECKPOINT_A)
    config = {"ops": {"evaluation_scores": {"config": {**RUN_CONFIG["ops"]["evaluation_scores"]["config"],
                                                       "batch_size": 2}}}}  # fmt: skip
    resources = {"lake": Lake(root=str(store.root)), "training": Training(base_model=str(tiny.captioner))}
    slow = DeadlineAfterTheFirstBaseBatch(backend="transformers")
    result = dg.materialize([evaluation_scores], partition_key="cs", run_config=config, raise_on_error=False,
                            resources={**resources, "evaluator": slow})  # fmt: skip
    assert not result.success
    message = failure_message(result)
    assert "reached its stage deadline with 6 of 8 answers left (base: 2, finetuned: 4)" in message
    assert "the 2 generated in this run are cached" in message
    # No partial scores: a paired comparison over the answered subset would not be the test set's.
    assert not store.has_table("evaluation_scores", "cs") and not store.has_table("evaluation_samples", "cs")
    rerun = dg.materialize([evaluation_scores], partition_key="cs", run_config=config,
                           resources={**resources, "evaluator": Evaluator(backend="transformers")})  # fmt: skip
    assert rerun.success and scores_metadata(rerun)["generated"] == {"base": 2, "finetuned": 4}
    expected = vlm.generate([Image.open(io.BytesIO(store.get_bytes(image_key(f"{n:064x}", "png")))) for n in range(4)],
                            PROMPTS, max_new_tokens=6, batch_size=1)  # fmt: skip
    assert outputs_by_model(store) == {"base": [g.text for g in expected], "finetuned": [g.text for g in expected]}


def test_an_item_whose_generation_raises_fails_evaluation_naming_it_after_the_rest_is_cached(tiny, tmp_path):
    store = build_lake(tmp_path / "lake", tiny)
    publish_checkpoint(store, tiny, CHECKPOINT_A)
    resources = {"lake": Lake(root=str(store.root)), "training": Training(base_model=str(tiny.captioner))}
    failing = BaseRaisesOnTheThirdImage(backend="transformers")
    result = dg.materialize([evaluation_scores], partition_key="cs", run_config=RUN_CONFIG, raise_on_error=False,
                            resources={**resources, "evaluator": failing})  # fmt: skip
    assert not result.success
    assert "generation raised on 1 test item(s); every model must answer every item" in failure_message(result)
    rerun = dg.materialize([evaluation_scores], partition_key="cs", run_config=RUN_CONFIG,
                           resources={**resources, "evaluator": Evaluator(backend="transformers")})  # fmt: skip
    assert rerun.success and scores_metadata(rerun)["generated"] == {"base": 1, "finetuned": 4}


def test_scores_and_the_report_carry_every_metric_as_a_float_the_ui_can_plot(tiny, tmp_path):
    store = build_lake(tmp_path / "lake", tiny)
    publish_checkpoint(store, tiny, CHECKPOINT_A)
    instance = dg.DagsterInstance.ephemeral()
    result = evaluate(store, tiny, Evaluator(backend="transformers"), instance)
    assert result.success
    (event,) = [e for e in result.asset_materializations_for_node("evaluation_scores")
                if e.asset_key.path == ["evaluation_scores"]]  # fmt: skip
    scores = store.read_table("evaluation_scores", "cs")
    value = {(row["model"], row["metric"]): row["value"] for row in scores.iter_rows(named=True)}
    for metric in ("keyword_accuracy", "meteor", "chrf"):
        for model in ("base", "finetuned"):
            entry = event.metadata[f"{metric}_{model}"]
            assert isinstance(entry, dg.FloatMetadataValue) and entry.value == pytest.approx(value[model, metric])
        delta = event.metadata[f"{metric}_delta_vs_base"]
        assert isinstance(delta, dg.FloatMetadataValue)
        assert delta.value == pytest.approx(value["finetuned", metric] - value["base", metric])
    assert not any(name.endswith("_delta_vs_previous") for name in event.metadata)  # no previous checkpoint yet
    # The generation loop's progress is in the run log, one line set per model.
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    for role in ("base", "finetuned"):
        assert f"evaluation_scores ({role}): started, 4 of 4 answers to do" in messages
        assert any(m.startswith(f"evaluation_scores ({role}): 4/4 answers (100%)") for m in messages), messages

    report = dg.materialize([evaluation_report], resources={"lake": Lake(root=str(store.root))})
    (event,) = [e for e in report.asset_materializations_for_node("evaluation_report")
                if e.asset_key.path == ["evaluation_report"]]  # fmt: skip
    for metric in ("keyword_accuracy", "meteor", "chrf"):
        for name in (f"cs_{metric}_finetuned", f"cs_{metric}_delta_vs_base", f"mean_{metric}_finetuned"):
            assert isinstance(event.metadata[name], dg.FloatMetadataValue), name
        assert event.metadata[f"mean_{metric}_finetuned"].value == pytest.approx(value["finetuned", metric])
