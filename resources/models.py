"""Model resources: the captioner (MLLM), the translator and the evaluator (the models under evaluation), each
in-process (HF transformers) or remote (an OpenAI-compatible chat-completions server such as vLLM, SGLang or TGI).

Models are named by hub id, local path, or ``lake://models/...`` (a folder in the lake, e.g. the tiny demo
models); with the ``openai`` backend ``model`` is the name the server serves. Loaded models are kept per process,
so the partitions of one run load each model once. Settings (mella_assets/settings.py, read when a resource is
made and shown in the launchpad defaults): ``MELLA_CAPTIONER_BACKEND`` / ``MELLA_TRANSLATOR_BACKEND``
(``transformers`` | ``openai``), ``MELLA_CAPTIONER_MODEL`` / ``MELLA_TRANSLATOR_MODEL``, ``MELLA_CAPTIONER_URL`` /
``MELLA_TRANSLATOR_URL``; the evaluator's ``MELLA_EVALUATION_*`` (see :class:`Evaluator`). The API key is the
``api_key`` field — ``build_resources`` sets it to ``dg.EnvVar("MELLA_CAPTIONER_API_KEY")`` (resolved at run time,
shown in the UI by name only) — or, when unset, the setting named by ``api_key_env`` read when the backend is
loaded; it is never shown in a repr or logged.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import dagster as dg
from pydantic import Field

from mella_assets.lib.cache import model_fingerprint
from mella_assets.lib.checkpoints import checkpoint_id
from mella_assets.lib.openai_backend import (
    ChatCompletionsClient,
    OpenAICaptioner,
    OpenAITranslator,
    load_translation_prompt,
)
from mella_assets.lib.vlm import DEFAULT_MAX_PIXELS, VisionLanguageModel
from mella_assets.ling.translation import DEFAULT_MAX_SENTENCE_CHARS
from mella_assets.ling.translation import Translator as HFTranslator
from mella_assets.settings import TINY_CAPTIONER as TINY_CAPTIONER  # the demo's models, re-exported
from mella_assets.settings import TINY_TRANSLATOR as TINY_TRANSLATOR
from mella_assets.settings import load_settings

BACKENDS = ("transformers", "openai")


@lru_cache(maxsize=4)
def _load_vlm(path: str, adapter: str | None, device: str, dtype: str) -> VisionLanguageModel:
    return VisionLanguageModel.from_pretrained(path, adapter=adapter, device=device, dtype=dtype)


@lru_cache(maxsize=2)
def _load_translator(path: str, device: str, dtype: str) -> HFTranslator:
    return HFTranslator.from_pretrained(path, device=device, dtype=dtype)


def load_vlm(path: str, adapter: str | None = None, device: str = "auto", dtype: str = "auto"):
    """A vision-language model from a local path or hub id, cached per process."""
    return _load_vlm(path, adapter, device, dtype)


def _setting(name: str) -> Callable[[], object]:
    """A default factory: the setting ``name`` of mella_assets/settings.py, read when the resource is made."""
    return lambda: getattr(load_settings(), name)


class _RemoteSettings(dg.ConfigurableResource):
    """Settings shared by both roles for the ``openai`` backend."""

    backend: str = "transformers"
    url: str = ""
    api_key_env: str = ""
    api_key: str | None = Field(
        None,
        repr=False,
        description="openai backend: the API key; set it as an environment variable reference (dg.EnvVar) so it "
        "is resolved at run time and never shown. Unset: the setting named by api_key_env.",
    )
    concurrency: int = Field(8, description="openai backend: requests in flight at once.")
    timeout_s: float = Field(120.0, description="openai backend: seconds to wait for one response.")
    max_retries: int = Field(5, description="openai backend: retries of a 429 / 5xx / timeout (backoff 0.5 s × 2^n).")

    def _check_backend(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown model backend {self.backend!r}; choose one of {BACKENDS}")
        if self.backend == "openai" and not self.url:
            raise ValueError(
                "the openai backend needs a server URL "
                "(MELLA_CAPTIONER_URL / MELLA_TRANSLATOR_URL / MELLA_EVALUATION_URL)"
            )

    def _api_key(self) -> str | None:
        """The key to send: the ``api_key`` field, else the setting named by ``api_key_env`` (read now)."""
        if self.api_key:
            return self.api_key
        return load_settings().by_env(self.api_key_env) if self.api_key_env else None

    def client(self, model: str) -> ChatCompletionsClient:
        return ChatCompletionsClient(
            self.url,
            model,
            api_key=self._api_key(),
            api_key_env=self.api_key_env or None,
            concurrency=self.concurrency,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
        )


class Captioner(_RemoteSettings):
    """The MLLM that writes detailed English captions for D_ling, and which images it captions."""

    backend: str = Field(
        default_factory=_setting("captioner_backend"),
        description="'transformers' (in-process, any AutoModelForImageTextToText) or 'openai' (chat completions).",
    )
    model: str = Field(
        default_factory=_setting("captioner_model"),
        description="Hub id, local path or lake:// folder of an image-text-to-text checkpoint; for the openai "
        "backend, the served model name.",
    )
    url: str = Field(
        default_factory=_setting("captioner_url"),
        description="openai backend: server base URL, e.g. http://gpu-box:8000/v1.",
    )
    api_key_env: str = Field(
        "MELLA_CAPTIONER_API_KEY",
        description="openai backend: the variable the API key comes from (a setting; named in errors, never the key).",
    )
    prompt_version: str = Field("caption-v1", description="Version of the caption prompt (mella_assets/prompts).")
    max_new_tokens: int = Field(48, description="Longest caption, in tokens.")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, description="Images are downscaled to at most this many pixels.")
    batch_size: int = Field(8, description="Images per generate() call (per group of requests for openai).")
    max_images_per_language: int = Field(
        0, description="Caption a deterministic sample of at most this many images per language (0 = all)."
    )
    max_images_per_domain: int = Field(
        0, description="At most this many images of one web site (domain) per language (0 = no cap)."
    )
    sample_seed: int = Field(0, description="Seed of the deterministic sample (changing it picks other images).")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    dtype: str = Field("auto", description="'auto' (bf16 on CUDA, fp32 on CPU), 'bfloat16', 'float32'.")

    def model_path(self, resolve: Callable[[str], str]) -> str:
        """The model as the backend takes it: a resolved local path / hub id, or the served name."""
        self._check_backend()
        return resolve(self.model) if self.backend == "transformers" else self.model

    def version(self, model_path: str) -> str:
        """Model fingerprint for cache keys (computed without loading the model)."""
        return model_fingerprint(model_path) if self.backend == "transformers" else f"openai:{model_path}"

    def load(self, model_path: str) -> VisionLanguageModel | OpenAICaptioner:
        """The backend: an in-process model (cached per process) or a chat-completions client."""
        self._check_backend()
        if self.backend == "openai":
            return OpenAICaptioner(self.client(model_path))
        return load_vlm(model_path, None, self.device, self.dtype)


class Translator(_RemoteSettings):
    """The machine translation model that carries English captions into the target language, and its QA."""

    backend: str = Field(
        default_factory=_setting("translator_backend"),
        description="'transformers' (in-process, any AutoModelForSeq2SeqLM) or 'openai' (chat completions).",
    )
    model: str = Field(
        default_factory=_setting("translator_model"),
        description="Hub id, local path or lake:// folder of a seq2seq checkpoint (NLLB-200 by default in prod); "
        "for the openai backend, the served model name.",
    )
    url: str = Field(
        default_factory=_setting("translator_url"),
        description="openai backend: server base URL, e.g. http://gpu-box:8000/v1.",
    )
    api_key_env: str = Field(
        "MELLA_TRANSLATOR_API_KEY",
        description="openai backend: the variable the API key comes from (a setting; named in errors, never the key).",
    )
    prompt_version: str = Field("translate-v1", description="openai backend: version of the translation prompt.")
    max_new_tokens: int = Field(64, description="Longest translated sentence (openai: caption), in tokens.")
    max_sentence_chars: int = Field(
        DEFAULT_MAX_SENTENCE_CHARS, description="Sentences longer than this are cut at clauses / spaces."
    )
    batch_size: int = Field(16, description="Sentences per generate() call.")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    dtype: str = Field("auto", description="'auto' (bf16 on CUDA, fp32 on CPU), 'bfloat16', 'float32'.")
    serbian_script: str = Field("cyrillic", description="'cyrillic' or 'latin' (transliterated) for sr output.")
    enforce_output_language: bool = Field(
        default_factory=lambda: load_settings().translation_language_qa == "enforce",
        description="Reject translations whose detected language is not the target. The tiny demo models "
        "write gibberish, so the demo records this check without enforcing it.",
    )
    length_ratio_bounds: dict[str, list[float]] = Field(
        default_factory=dict,
        description='Per-language [min, max] output/source character ratio, e.g. {"ko": [0.15, 1.5]}; '
        "languages not named keep the defaults of mella_assets/ling/translation_qa.py.",
    )

    def model_path(self, resolve: Callable[[str], str]) -> str:
        """The model as the backend takes it: a resolved local path / hub id, or the served name."""
        self._check_backend()
        return resolve(self.model) if self.backend == "transformers" else self.model

    def version(self, model_path: str) -> str:
        """Model fingerprint for cache keys (openai: served name and prompt version)."""
        if self.backend == "transformers":
            return model_fingerprint(model_path)
        return f"openai:{model_path}:{self.prompt_version}"

    def generation_params(self) -> dict:
        """Keyword arguments of ``translate`` that change its output (they go into the cache key)."""
        params = {"max_new_tokens": self.max_new_tokens}
        if self.backend == "transformers":
            params["max_sentence_chars"] = self.max_sentence_chars
        return params

    def load(self, model_path: str) -> HFTranslator | OpenAITranslator:
        """The backend: an in-process model (cached per process) or a chat-completions client."""
        self._check_backend()
        if self.backend == "openai":
            return OpenAITranslator(self.client(model_path), load_translation_prompt(self.prompt_version))
        return _load_translator(model_path, self.device, self.dtype)


@dataclass(frozen=True)
class ModelUnderTest:
    """One model evaluation asks for answers: what identifies its answers in the cache, what to show, and how to
    get the backend (loaded only when an answer is missing from the cache)."""

    version: str
    name: str
    load: Callable[[], VisionLanguageModel | OpenAICaptioner]


class Evaluator(_RemoteSettings):
    """The models ``evaluation_scores`` compares — the base model, the previous and the latest fine-tuned
    checkpoint — run in-process or asked through an OpenAI-compatible server.

    ``transformers``: each model is loaded here (a LoRA checkpoint as base model + adapter), its cache version the
    content fingerprint of its folders. ``openai``: the server serves every model under a name; requests carry the
    image (a PNG ``data:`` URL) and the test prompt, greedy, ``max_new_tokens`` as ``max_tokens``. The base model is
    asked as ``base_model_name`` (empty: the training resource's ``base_model``, the name vLLM gives a model served
    by hub id); a checkpoint as ``checkpoint_model_name`` with ``{checkpoint_id}`` replaced by its id — with vLLM,
    ``vllm serve <base> --enable-lora --lora-modules <id>=<folder of checkpoints/<id>>`` for a LoRA checkpoint, or
    ``vllm serve <folder of checkpoints/<id>> --served-model-name <id>`` for a full one. Cached answers are keyed
    by served name *and* what is served: the checkpoint key (or the base model reference), so a new checkpoint is
    never answered from an old one's cache even under a fixed name. A fixed name (no ``{checkpoint_id}``) can
    only address the latest checkpoint: the previous one is then not evaluated."""

    backend: str = Field(
        default_factory=_setting("evaluation_backend"),
        description="'transformers' (models loaded in-process) or 'openai' (chat completions, e.g. vLLM).",
    )
    url: str = Field(
        default_factory=_setting("evaluation_url"),
        description="openai backend: server base URL, e.g. http://vllm:8000/v1.",
    )
    api_key_env: str = Field(
        "MELLA_EVALUATION_API_KEY",
        description="openai backend: the variable the API key comes from (a setting; named in errors, never the key).",
    )
    base_model_name: str = Field(
        default_factory=_setting("evaluation_base_model"),
        description="openai backend: served name of the base model (empty: the training resource's base_model).",
    )
    checkpoint_model_name: str = Field(
        default_factory=_setting("evaluation_checkpoint_model"),
        description="openai backend: served name of a fine-tuned checkpoint; {checkpoint_id} is replaced by the "
        "checkpoint's id (the LoRA module's name with vLLM --lora-modules).",
    )
    device: str = Field("auto", description="transformers backend: 'auto' (CUDA when present), 'cpu' or 'cuda'.")
    dtype: str = Field("auto", description="transformers backend: 'auto' (bf16 on CUDA, fp32 on CPU), 'bfloat16'.")

    def served_name(self, record: dict | None, base_model: str) -> str:
        """openai backend: the name the server serves a checkpoint ``record`` (None: the base model) under."""
        if record is None:
            return self.base_model_name or base_model
        return self.checkpoint_model_name.replace("{checkpoint_id}", checkpoint_id(record["checkpoint_key"]))

    def addresses_each_checkpoint(self) -> bool:
        """Whether every checkpoint has its own served name (else only the latest can be asked)."""
        return self.backend != "openai" or "{checkpoint_id}" in self.checkpoint_model_name

    def base(self, base_model: str, resolve: Callable[[str], str]) -> ModelUnderTest:
        """The base model (``base_model``: the training resource's reference; ``resolve``: the lake's resolver)."""
        self._check_backend()
        if self.backend == "openai":
            return self._remote(self.served_name(None, base_model), base_model)
        return self._local(resolve(base_model), None)

    def checkpoint(self, record: dict, local: Callable[[], tuple[str, str | None]]) -> ModelUnderTest:
        """A fine-tuned checkpoint (a ``checkpoints/LATEST.json`` record); ``local`` gives (model path, adapter
        path or None) on this machine and is called by the transformers backend only (it may download)."""
        self._check_backend()
        if self.backend == "openai":
            return self._remote(self.served_name(record, ""), record["checkpoint_key"])
        return self._local(*local())

    def _remote(self, name: str, identity: str) -> ModelUnderTest:
        client = self.client(name)
        # An answer cut at max_new_tokens is still the model's answer: scored as the in-process backend scores it.
        return ModelUnderTest(
            f"openai:{name}@{identity}", name, lambda: OpenAICaptioner(client, reject_truncated=False)
        )

    def _local(self, path: str, adapter: str | None) -> ModelUnderTest:
        version = model_fingerprint(path, adapter)
        return ModelUnderTest(version, version, lambda: load_vlm(path, adapter, self.device, self.dtype))
