"""The builtin SFT trainer's optimisation: learning-rate schedule, gradient clipping, gradient accumulation,
bf16 mixed precision, length-grouped batches and their place in the resume state, on the tiny VLM (CPU)."""

import itertools
import math
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mella_assets.demo.tiny_models import TinyModels
from mella_assets.training.sft import (
    IGNORE_INDEX,
    SFTConfig,
    build_optimizer,
    encode_batch,
    epoch_order,
    example_lengths,
    load_resume_state,
    next_micro_batch,
    optimizer_step,
    read_examples,
    setup_training,
    train_sft,
)


def config_for(tiny: TinyModels, train_file: Path, output_dir: Path, **settings) -> SFTConfig:
    return SFTConfig(base_model=str(tiny.captioner), train_file=str(train_file), output_dir=str(output_dir), **settings)


def scheduled_lrs(config: SFTConfig) -> list[float]:
    """The learning rate of each optimizer step, read from a real AdamW stepped with its schedule as training does."""
    import torch

    weight = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer, scheduler = build_optimizer(torch.nn.ParameterList([weight]), config)
    lrs = []
    for _ in range(config.max_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.ones_like(weight)
        optimizer.step()
        scheduler.step()
    return lrs


def test_the_learning_rate_warms_up_linearly_then_decays_to_its_floor() -> None:
    common = {"base_model": "", "train_file": "", "output_dir": "", "learning_rate": 1e-3, "min_lr_ratio": 0.1}
    cosine = scheduled_lrs(SFTConfig(max_steps=21, warmup_steps=4, **common))
    assert cosine[:5] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])  # step 5: the first after warmup
    # Decay over steps 5..21: step 9 is a quarter of the way, step 13 half, step 21 the floor.
    assert cosine[8] == pytest.approx(1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine[12] == pytest.approx(5.5e-4)
    assert cosine[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in itertools.pairwise(cosine[4:]))  # never rising after warmup
    linear = scheduled_lrs(SFTConfig(max_steps=21, warmup_steps=4, lr_scheduler="linear", **common))
    assert (linear[8], linear[12], linear[-1]) == pytest.approx((7.75e-4, 5.5e-4, 1e-4))
    constant = scheduled_lrs(SFTConfig(max_steps=21, warmup_steps=4, lr_scheduler="constant", **common))
    assert constant[0] == pytest.approx(2.5e-4) and constant[3:] == pytest.approx([1e-3] * 18)
    # Without warmup_steps the warmup is warmup_ratio of max_steps: 10 of 100 here.
    by_ratio = scheduled_lrs(SFTConfig(max_steps=100, warmup_ratio=0.1, **common))
    assert by_ratio[0] == pytest.approx(1e-4) and by_ratio[9] == pytest.approx(1e-3)


def test_training_runs_at_the_scheduled_rate_and_reports_lr_grad_norm_and_answer_tokens(
    tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    config = config_for(tiny, train_file, tmp_path, max_steps=6, warmup_steps=2, log_every=1, learning_rate=1e-3)
    logs: list[dict] = []
    result = train_sft(config, log=logs.append)
    progress = [entry for entry in logs if entry["event"] == "progress"]
    assert [entry["lr"] for entry in progress] == pytest.approx(scheduled_lrs(config), rel=1e-5)
    assert [entry["lr"] for entry in progress][:2] == pytest.approx([5e-4, 1e-3])
    assert all(entry["grad_norm"] > 0 and math.isfinite(entry["grad_norm"]) for entry in progress)
    assert all(entry["answer_tokens"] > 0 for entry in progress)
    assert result.answer_tokens == sum(entry["answer_tokens"] for entry in progress)
    assert (result.precision, result.effective_batch_size) == ("fp32", 4)


def post_clip_norms(state) -> list[float]:
    """Records the total gradient norm the optimizer is handed at each step (after clipping)."""
    import torch

    norms: list[float] = []
    parameters = [p for p in state.model.parameters() if p.requires_grad]

    def record(optimizer, args, kwargs) -> None:
        norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])))

    state.optimizer.register_step_pre_hook(record)
    return norms


def test_gradients_are_clipped_to_max_grad_norm_and_the_pre_clip_norm_is_reported(
    tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    clipped = setup_training(config_for(tiny, train_file, tmp_path / "a", method="full", max_grad_norm=0.05))
    clipped_norms = post_clip_norms(clipped)
    steps = [optimizer_step(clipped) for _ in range(2)]
    for step, handed in zip(steps, clipped_norms, strict=True):
        assert step.grad_norm > 0.5  # the full model's gradient is far above the bound
        assert handed <= 0.05 * (1 + 1e-5) and handed == pytest.approx(0.05, rel=1e-4)
    unclipped = setup_training(config_for(tiny, train_file, tmp_path / "b", method="full", max_grad_norm=0.0))
    unclipped_norms = post_clip_norms(unclipped)
    step = optimizer_step(unclipped)
    assert unclipped_norms == pytest.approx([step.grad_norm], rel=1e-5)
    assert step.grad_norm == pytest.approx(steps[0].grad_norm, rel=1e-5)  # the same first batch and weights


def gradients_handed_to_the_optimizer(state) -> dict:
    """Records each trained parameter's gradient as the optimizer step receives it (after accumulation)."""
    gradients: dict = {}

    def record(optimizer, args, kwargs) -> None:
        gradients.update({n: p.grad.clone() for n, p in state.model.named_parameters() if p.grad is not None})

    state.optimizer.register_step_pre_hook(record)
    return gradients


def test_two_accumulated_micro_batches_of_two_train_as_one_batch_of_four(
    tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoProcessor

    # Same data order (no length grouping), no clipping (it would rescale both runs alike and could hide a
    # mis-normalised loss).
    common = {"method": "full", "learning_rate": 1e-3, "group_by_length": False, "max_grad_norm": 0.0}
    large = setup_training(config_for(tiny, train_file, tmp_path / "large", batch_size=4, **common))
    accumulated = setup_training(
        config_for(tiny, train_file, tmp_path / "accumulated", batch_size=2, grad_accumulation_steps=2, **common)
    )
    assert large.effective_batch_size == accumulated.effective_batch_size == 4
    large_gradients = gradients_handed_to_the_optimizer(large)
    accumulated_gradients = gradients_handed_to_the_optimizer(accumulated)
    large_step, accumulated_step = optimizer_step(large), optimizer_step(accumulated)
    assert accumulated_step.answer_tokens == large_step.answer_tokens > 0
    assert accumulated_step.loss == pytest.approx(large_step.loss, rel=1e-5)
    assert accumulated_step.grad_norm == pytest.approx(large_step.grad_norm, rel=1e-5)
    assert large_gradients.keys() == accumulated_gradients.keys()
    for name, gradient in large_gradients.items():
        assert torch.allclose(accumulated_gradients[name], gradient, rtol=1e-4, atol=1e-7), name
    # Weights after the step agree too, up to AdamW's first step magnifying float noise in (theoretically) zero
    # gradients, such as attention key biases', to about lr / 100.
    for (name, weight), other in zip(large.model.named_parameters(), accumulated.model.parameters(), strict=True):
        assert torch.allclose(other, weight, atol=1e-4), name

    # The step's two micro-batches hold different numbers of answer tokens, so averaging per-micro-batch means
    # (instead of weighing every token alike) would have given another loss and gradient: the test can tell.
    examples = read_examples(train_file)
    first_four = [examples[i] for i in epoch_order(random.Random(0), [0] * len(examples), 4, False)[:4]]
    processor = AutoProcessor.from_pretrained(tiny.captioner)
    counts = [int((encode_batch(processor, first_four[i : i + 2])["labels"] != IGNORE_INDEX).sum()) for i in (0, 2)]
    assert counts[0] != counts[1]


def test_bf16_mixed_keeps_fp32_master_weights_and_optimizer_state_and_trains(
    tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    import torch

    # Two examples in batches of two: every step sees the same batch, so its loss must fall step by step.
    pair = tmp_path / "pair.jsonl"
    pair.write_text("".join(train_file.read_text(encoding="utf-8").splitlines(keepends=True)[:2]), encoding="utf-8")
    settings = {"method": "full", "batch_size": 2, "learning_rate": 1e-3}
    mixed = setup_training(config_for(tiny, pair, tmp_path / "mixed", precision="bf16-mixed", **settings))
    plain = setup_training(config_for(tiny, pair, tmp_path / "plain", precision="fp32", **settings))
    assert mixed.precision == "bf16-mixed"
    mixed_losses = [optimizer_step(mixed).loss for _ in range(3)]
    plain_losses = [optimizer_step(plain).loss for _ in range(3)]
    assert all(math.isfinite(loss) for loss in mixed_losses)
    assert mixed_losses[0] > mixed_losses[1] > mixed_losses[2]
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())
    moments = [tensor for state in mixed.optimizer.state.values() for tensor in (state["exp_avg"], state["exp_avg_sq"])]
    assert moments and all(tensor.dtype == torch.float32 for tensor in moments)
    # The forward really ran in bf16 (its loss differs from fp32's) and learns as fp32 does.
    assert mixed_losses != plain_losses
    assert mixed_losses == pytest.approx(plain_losses, rel=2e-2)


def test_bf16_mixed_lora_keeps_the_frozen_base_in_bf16_and_the_adapter_in_fp32(
    tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    import torch

    state = setup_training(config_for(tiny, train_file, tmp_path, precision="bf16-mixed"))
    step = optimizer_step(state)
    assert math.isfinite(step.loss) and step.grad_norm > 0
    trainable = [p for p in state.model.parameters() if p.requires_grad]
    frozen = [p for p in state.model.parameters() if not p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(s["exp_avg"].dtype == torch.float32 for s in state.optimizer.state.values())


def padding(processor, examples: list[dict], order: list[int], batch: int) -> int:
    """Pad tokens of the batches ``order`` cuts ``examples`` into, as encode_batch pads them."""
    return sum(
        int((encode_batch(processor, [examples[i] for i in order[start : start + batch]])["attention_mask"] == 0).sum())
        for start in range(0, len(order), batch)
    )


def test_length_grouping_lowers_padding_and_still_shows_every_example_once_per_epoch(
    tiny: TinyModels, train_file: Path
) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny.captioner)
    examples = read_examples(train_file)
    lengths = example_lengths(processor, examples)
    assert len(set(lengths)) > 3  # the answers differ in length, so grouping has something to do
    grouped_padding = plain_padding = 0
    for seed in range(3):
        grouped = epoch_order(random.Random(seed), lengths, 4, True)
        plain = epoch_order(random.Random(seed), lengths, 4, False)
        assert sorted(grouped) == sorted(plain) == list(range(len(examples)))
        grouped_padding += padding(processor, examples, grouped, 4)
        plain_padding += padding(processor, examples, plain, 4)
    assert grouped_padding < 0.6 * plain_padding

    # Many examples: every epoch a permutation, epochs differ, the same seed gives the same order (every rank
    # draws it alike), the longest batch comes first and a short last batch stays last.
    many = [random.Random(i).randint(5, 500) for i in range(1003)]
    rng = random.Random(7)
    epochs = [epoch_order(rng, many, 8, True) for _ in range(2)]
    assert all(sorted(order) == list(range(1003)) for order in epochs)
    assert epochs[0] != epochs[1]
    assert epoch_order(random.Random(7), many, 8, True) == epochs[0]
    assert max(many[i] for i in epochs[0][:8]) == max(many)
    assert len(epochs[0][1000:]) == 3  # 1003 = 125 batches of 8 and a short one of 3, at the end


def test_each_epoch_of_the_trainer_visits_every_example_once(
    tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    # 12 examples in micro-batches of 5: 5, 5 and a short 2 per epoch (batches never straddle two epochs).
    state = setup_training(config_for(tiny, train_file, tmp_path, batch_size=5))
    for _ in range(2):
        batches = [next_micro_batch(state) for _ in range(3)]
        assert [len(batch) for batch in batches] == [5, 5, 2]
        seen = sorted(example["image"] for batch in batches for example in batch)
        assert seen == sorted(example["image"] for example in state.examples)
        assert not state.order


def test_a_resume_state_of_other_optimisation_settings_is_ignored(
    tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    common = {"max_steps": 3, "log_every": 3, "save_every": 2, "work_dir": str(tmp_path / "work")}
    train_sft(config_for(tiny, train_file, tmp_path / "first", **common))
    work = Path(common["work_dir"])
    assert load_resume_state(work, config_for(tiny, train_file, tmp_path / "same", **common))["step"] == 2
    # Paths and logging cadence may change between launches; the optimisation settings may not.
    assert load_resume_state(work, config_for(tiny, train_file, tmp_path / "b", **{**common, "log_every": 1}))
    others = {
        "grad_accumulation_steps": 2, "lr_scheduler": "linear", "warmup_steps": 1, "warmup_ratio": 0.5,
        "min_lr_ratio": 0.0, "max_grad_norm": 0.0, "weight_decay": 0.1, "precision": "bf16-mixed",
        "group_by_length": False,
    }  # fmt: skip
    for setting, value in others.items():
        relaunch = config_for(tiny, train_file, tmp_path / "c", **{setting: value}, **common)
        assert load_resume_state(work, relaunch) is None, setting


@pytest.mark.parametrize(
    ("setting", "value"),
    [("precision", "fp16"), ("lr_scheduler", "step"), ("grad_accumulation_steps", 0), ("min_lr_ratio", 1.5)],
)
def test_invalid_optimisation_settings_are_refused(
    setting: str, value, tiny: TinyModels, train_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=setting):
        train_sft(config_for(tiny, train_file, tmp_path, **{setting: value}))
