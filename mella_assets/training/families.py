"""What fine-tuning needs to know about a model family, read off the loaded model instead of a table of names.

:func:`lora_target_modules` picks LoRA targets for any image-text-to-text model: the linear layers of the language
model (attention and MLP projections: ``q/k/v/o_proj`` and ``gate/up/down_proj`` in Llama-style decoders, Mllama's
cross-attention too), found under the module ``model.get_decoder()`` returns, so the vision tower (whose layers are
often named ``q_proj`` / ``v_proj`` / ``fc1`` as well, and in Qwen2.5-VL even ``gate_proj``) and the multimodal
projector stay frozen unless asked for. The same code serves LLaVA, LLaVA-NeXT, Idefics3, SmolVLM, Gemma 3,
PaliGemma, Mllama, Aya Vision, InternVL, Qwen2-VL and Qwen2.5-VL, and families added to transformers later.

:func:`prefix_lm_token_type_ids` gives prefix-LM families (PaliGemma) the ``token_type_ids`` that make the answer
causal: their processor marks a suffix only when given one, and a chat rendered as one text would be attended
bidirectionally throughout (the answer visible to itself: a loss that means nothing).
"""

from __future__ import annotations

import re
from typing import Any

# Where a model keeps its parts, tried in order on the model and on its inner ``model`` (transformers 5 layout).
LANGUAGE_MODEL_ATTRIBUTES = ("language_model", "text_model", "llm", "language")
VISION_ATTRIBUTES = ("vision_tower", "vision_model", "visual", "vision_encoder", "image_encoder")
PROJECTOR_ATTRIBUTES = ("multi_modal_projector", "connector", "merger", "mm_projector", "projector", "mlp1")
# Linear layers under the language model that are no adapter targets: output heads and mixture-of-experts routers.
EXCLUDED_LEAVES = frozenset({"lm_head", "gate", "router", "shared_expert_gate", "score"})
# Processors whose ``token_type_ids`` split a bidirectional prefix (0) from a causal suffix (1).
PREFIX_LM_PROCESSORS = frozenset({"PaliGemmaProcessor"})
# Layers PEFT adds inside an adapted one: not targets themselves (a model already wrapped keeps its targets).
_PEFT_PARTS = frozenset(
    {"base_layer", "lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"}
)


class UnknownLayout(ValueError):
    """The model's language model (or vision tower, when asked for) could not be found."""


def unwrap(model: Any) -> Any:
    """The transformers model under a PEFT or DDP wrapper (the model itself when unwrapped)."""
    while True:
        if hasattr(model, "get_base_model") and callable(model.get_base_model):
            inner = model.get_base_model()
        elif type(model).__name__ == "DistributedDataParallel":
            inner = model.module
        else:
            return model
        if inner is model:
            return model
        model = inner


def _module_names(model: Any) -> dict[int, str]:
    return {id(module): name for name, module in model.named_modules()}


def _attribute_prefixes(model: Any, attributes: tuple[str, ...]) -> list[str]:
    """Module names of the first present attribute of ``attributes`` on the model or its inner ``model``."""
    names = _module_names(model)
    found = []
    for attribute in attributes:
        for holder in (model, getattr(model, "model", None)):
            module = getattr(holder, attribute, None) if holder is not None else None
            if module is not None and hasattr(module, "named_modules") and names.get(id(module)):
                found.append(names[id(module)])
    return list(dict.fromkeys(found))


def language_model_prefix(model: Any) -> str:
    """Module name of the language model (decoder) of ``model``: ``model.get_decoder()``, else a known attribute."""
    model = unwrap(model)
    names = _module_names(model)
    decoder = None
    if hasattr(model, "get_decoder"):
        try:
            decoder = model.get_decoder()
        except (AttributeError, NotImplementedError):
            decoder = None
    prefix = names.get(id(decoder), "") if decoder is not None else ""
    if not prefix:  # not found, or the whole model: look for a named language model instead
        candidates = _attribute_prefixes(model, LANGUAGE_MODEL_ATTRIBUTES)
        prefix = candidates[0] if candidates else ""
    if not prefix:
        raise UnknownLayout(
            f"cannot find the language model of {type(model).__name__}: no get_decoder() submodule and none of "
            f"{', '.join(LANGUAGE_MODEL_ATTRIBUTES)}; pass LoRA target modules explicitly"
        )
    return prefix


def vision_prefixes(model: Any) -> list[str]:
    """Module names of the vision tower(s) of ``model`` (empty for a text-only model)."""
    return _attribute_prefixes(unwrap(model), VISION_ATTRIBUTES)


def projector_prefixes(model: Any) -> list[str]:
    """Module names of the multimodal projector(s) (Qwen's ``merger`` sits inside its vision tower)."""
    model = unwrap(model)
    language = language_model_prefix(model)
    names = [
        name
        for name, _ in model.named_modules()
        if name.rsplit(".", 1)[-1] in PROJECTOR_ATTRIBUTES and not _under(name, language)
    ]
    # Only the outermost of nested matches (e.g. a connector holding a "projector").
    return [name for name in names if not any(name.startswith(other + ".") for other in names if other != name)]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def linear_layers(model: Any) -> list[str]:
    """Names of every ``nn.Linear`` of ``model`` (the layers LoRA can adapt)."""
    import torch

    return [
        name
        for name, module in unwrap(model).named_modules()
        if isinstance(module, torch.nn.Linear) and not _PEFT_PARTS.intersection(name.split("."))
    ]


def select_linear_layers(model: Any, include_vision: bool = False, include_projector: bool = False) -> list[str]:
    """The linear layers :func:`lora_target_modules` targets, by full module name."""
    language = language_model_prefix(model)
    projectors = projector_prefixes(model)
    towers = vision_prefixes(model)
    if include_vision and not towers:
        raise UnknownLayout(f"cannot find the vision tower of {type(unwrap(model)).__name__} ({VISION_ATTRIBUTES})")
    if include_projector and not projectors:
        raise UnknownLayout(f"cannot find the projector of {type(unwrap(model)).__name__} ({PROJECTOR_ATTRIBUTES})")
    selected = []
    for name in linear_layers(model):
        leaf = name.rsplit(".", 1)[-1]
        in_projector = any(_under(name, prefix) for prefix in projectors)
        if _under(name, language) and not in_projector:
            if leaf not in EXCLUDED_LEAVES:
                selected.append(name)
        elif in_projector:
            if include_projector:
                selected.append(name)
        elif include_vision and any(_under(name, tower) for tower in towers):
            selected.append(name)
    return selected


def _regex(selected: list[str], groups: list[str]) -> str:
    """One regex per group prefix: the prefix, any path, then one of the selected leaf names under it."""
    parts = []
    for prefix in groups:
        leaves = sorted({name.rsplit(".", 1)[-1] for name in selected if _under(name, prefix) and name != prefix})
        if leaves:
            parts.append(rf"{re.escape(prefix)}\.(?:.*\.)?(?:{'|'.join(map(re.escape, leaves))})")
        if prefix in selected:  # the group is one linear layer itself (Mllama's projector)
            parts.append(re.escape(prefix))
    return "|".join(parts)


def lora_target_modules(model: Any, include_vision: bool = False, include_projector: bool = False) -> str | list[str]:
    """LoRA ``target_modules`` for ``model``: every linear layer of its language model (attention and MLP
    projections), and of its vision tower with ``include_vision`` and its multimodal projector with
    ``include_projector``. A regex (PEFT matches it against full module names) when a compact one selects exactly
    those layers, else the list of their full names."""
    selected = select_linear_layers(model, include_vision, include_projector)
    if not selected:
        raise UnknownLayout(f"no linear layer to adapt in the language model of {type(unwrap(model)).__name__}")
    groups = [language_model_prefix(model)]
    if include_vision:
        groups += vision_prefixes(model)
    if include_projector:
        groups += projector_prefixes(model)
    # The most specific prefix first, so a projector inside a tower (Qwen's merger) gets its own group.
    groups = sorted(dict.fromkeys(groups), key=lambda prefix: -prefix.count("."))
    pattern = _regex(selected, groups)
    matched = {name for name in linear_layers(model) if re.fullmatch(pattern, name)}
    return pattern if matched == set(selected) else sorted(selected)


def prefix_lm_token_type_ids(processor: Any, batch: dict[str, Any], answer_mask: Any) -> dict[str, Any]:
    """For prefix-LM processors (PaliGemma): ``token_type_ids`` = 1 on the answer tokens (causal suffix), 0 on the
    image, the prompt and padding (bidirectional prefix); other families' batches are returned unchanged (Gemma 3's
    ``token_type_ids`` mark image tokens and must stay as its processor made them)."""
    if type(processor).__name__ in PREFIX_LM_PROCESSORS and "token_type_ids" in batch:
        batch["token_type_ids"] = answer_mask.to(batch["token_type_ids"].dtype)
    return batch
