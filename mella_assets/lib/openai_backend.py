"""Captioning and translation through an OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, ...).

Stdlib HTTP only. Requests run at most ``concurrency`` at a time; a 429, a 5xx, a timeout or a dropped
connection is retried with exponential backoff (a ``Retry-After`` header wins), up to ``max_retries`` times,
after which :class:`BackendUnavailable` is raised (the caller's cache keeps what finished, so a rerun resumes).
A 400 / 413 / 422 is the item's fault, not the server's: it comes back as an :class:`ItemError` for the caller
to record as a reject; any other status (bad key, wrong URL) raises :class:`BackendUnavailable` at once.
The API key is handed over as a value (the resource takes it from its ``api_key`` field, a ``dg.EnvVar``, or the
settings), kept out of ``repr`` and never logged; errors name the variable it came from (``api_key_env``).
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from mella_assets.lib.cache import ConfigurationError
from mella_assets.lib.vlm import DEFAULT_MAX_PIXELS, STORED_BYTES_KEY, Generation, prepare_image

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# Statuses that blame the request itself (a bad or oversized item): recorded as the item's reject. Any other
# status (401 / 403 bad key, 404 wrong URL or model) is a configuration error and stops the run at once.
ITEM_ERROR_STATUSES = frozenset({400, 413, 422})


@dataclass(frozen=True)
class ItemError:
    """One request the server refused for the item's own sake (a non-retryable 4xx): record it, don't retry."""

    reason: str
    detail: str


class BackendUnavailable(RuntimeError):
    """The server kept failing (429 / 5xx / timeouts) after every retry."""


class BackendMisconfigured(BackendUnavailable, ConfigurationError):
    """The server refused the configuration (401 / 403 bad key, 404 wrong URL or model): retrying cannot help, so
    the step fails at once rather than after the network retry policy's waits."""


@dataclass(frozen=True)
class ChatResult:
    """The assistant's text and the server's token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None  # "stop", or "length" when the server cut the answer at max_tokens


def chat_completions_url(url: str) -> str:
    """``http://host:8000`` or ``.../v1`` or the full ``.../v1/chat/completions`` → the full endpoint."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date); None when absent/invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Retryable(Exception):
    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ChatCompletionsClient:
    """A small, thread-safe client for ``POST /v1/chat/completions`` with retries and a concurrency limit."""

    def __init__(
        self,
        url: str,
        model: str,
        api_key_env: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        api_key: str | None = None,
    ) -> None:
        """``api_key``: sent as ``Authorization: Bearer``; ``api_key_env``: the name of the variable it comes
        from, shown in ``repr`` and in the message of a rejected key instead of the key itself."""
        self.endpoint = chat_completions_url(url)
        self.model = model
        self.api_key_env = api_key_env
        self._api_key = api_key
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()  # requests, retries, ok, status_<code>, timeouts, connection_errors

    def __repr__(self) -> str:  # no key in logs: only its variable's name
        return f"ChatCompletionsClient({self.endpoint!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def complete(self, messages: list[dict[str, Any]], max_tokens: int) -> ChatResult | ItemError:
        """One greedy completion, retried on transient failures."""
        body = json.dumps(
            {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "n": 1}
        ).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries")
            try:
                return self._post(body)
            except _Retryable as error:
                last = str(error)
                if attempt == self.max_retries:
                    break
                wait = error.retry_after
                if wait is None:
                    wait = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                self._sleep(wait)
        raise BackendUnavailable(f"{self.endpoint}: gave up after {self.max_retries + 1} attempts ({last})")

    def _post(self, body: bytes) -> ChatResult | ItemError:
        self._count("requests")
        request = urllib.request.Request(self.endpoint, data=body, headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as error:
            self._count(f"status_{error.code}")
            detail = _error_detail(error)
            if error.code in RETRYABLE_STATUSES:
                retry_after = parse_retry_after(error.headers.get("Retry-After"))
                raise _Retryable(f"HTTP {error.code}: {detail}", retry_after) from error
            if error.code in ITEM_ERROR_STATUSES:
                return ItemError(reason="backend_rejected", detail=f"HTTP {error.code}: {detail}")
            hint = f" (is ${self.api_key_env} set to a valid key?)" if error.code in (401, 403) else ""
            raise BackendMisconfigured(f"{self.endpoint}: HTTP {error.code}{hint}: {detail}") from error
        except TimeoutError as error:
            self._count("timeouts")
            raise _Retryable(f"timeout after {self.timeout_s}s") from error
        except (urllib.error.URLError, ConnectionError, OSError, json.JSONDecodeError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):
                self._count("timeouts")
                raise _Retryable(f"timeout after {self.timeout_s}s") from error
            self._count("connection_errors")
            raise _Retryable(f"{type(error).__name__}: {reason}") from error
        self._count("ok")
        choice = payload["choices"][0]
        usage = payload.get("usage") or {}
        return ChatResult(
            text=(choice["message"].get("content") or "").strip(),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason"),
        )

    def complete_many(
        self, conversations: Sequence[list[dict[str, Any]]], max_tokens: int
    ) -> list[ChatResult | ItemError]:
        """Every conversation, at most ``concurrency`` in flight, results in input order."""
        if len(conversations) <= 1 or self.concurrency == 1:
            return [self.complete(messages, max_tokens) for messages in conversations]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(lambda messages: self.complete(messages, max_tokens), conversations))


def _error_detail(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read().decode("utf-8", "replace")
    except OSError:
        return error.reason or ""
    return text[:200]


def truncated(result: ChatResult, max_tokens: int) -> ItemError | None:
    """A caption or translation the server cut at ``max_tokens`` is not a caption: the item's reject."""
    if result.finish_reason != "length":
        return None
    return ItemError(reason="output_truncated", detail=f"finish_reason length at max_tokens={max_tokens}")


def image_data_url(image: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """The image as a ``data:`` URL: the stored file's own bytes when the image came from the lake and fits
    ``max_pixels`` (no re-encoding: smaller requests, the server decodes what we stored), else our prepared
    pixels as a lossless PNG."""
    mime, data, size = image.info.get(STORED_BYTES_KEY, (None, None, None))
    # A resized or cropped copy inherits ``info``: its size tells it is not the stored file any more.
    if data is not None and size == image.size and image.width * image.height <= max_pixels:
        return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
    buffer = io.BytesIO()
    prepare_image(image, max_pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_data_url(url: str) -> Image.Image:
    """The image of a base64 ``data:`` URL (what the loopback test server receives)."""
    header, _, data = url.partition(",")
    if not header.startswith("data:") or ";base64" not in header:
        raise ValueError("expected a base64 data: URL")
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


class OpenAICaptioner:
    """The captioner role over chat completions: one request per image (an image part + the prompt text)."""

    def __init__(self, client: ChatCompletionsClient, reject_truncated: bool = True) -> None:
        """``reject_truncated``: a caption cut at ``max_new_tokens`` becomes an ``output_truncated`` reject (the
        captioner role); evaluation answers keep their text, as the in-process backend's do."""
        self.client = client
        self.reject_truncated = reject_truncated

    @property
    def version(self) -> str:
        """What identifies the served model's behaviour for cache keys (the URL does not change outputs)."""
        return f"openai:{self.client.model}"

    def generate(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        max_new_tokens: int = 48,
        batch_size: int = 8,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> list[Generation | ItemError]:
        """Same contract as ``VisionLanguageModel.generate``; ``batch_size`` is the server's business."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        conversations = [
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image_data_url(image, max_pixels)}},
                        {"type": "text", "text": prompt},
                    ],
                }
            ]
            for image, prompt in zip(images, prompts, strict=True)
        ]
        out: list[Generation | ItemError] = []
        for result in self.client.complete_many(conversations, max_new_tokens):
            if isinstance(result, ItemError):
                out.append(result)
            elif self.reject_truncated and (cut := truncated(result, max_new_tokens)):
                out.append(cut)
            else:
                out.append(Generation(result.text, result.prompt_tokens, result.completion_tokens))
        return out


@dataclass(frozen=True)
class TranslationPrompt:
    """A versioned translation instruction with ``{source_name} {source_code} {target_name} {target_code}
    {text}`` placeholders."""

    version: str
    system: str
    text: str

    def render(self, text: str, source_code: str, target_code: str) -> list[dict[str, Any]]:
        from mella_assets.ling.translation import nllb_language_name

        user = self.text.format(
            source_name=nllb_language_name(source_code),
            source_code=source_code,
            target_name=nllb_language_name(target_code),
            target_code=target_code,
            text=text,
        )
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return [*messages, {"role": "user", "content": user}]


def load_translation_prompt(version: str = "translate-v1") -> TranslationPrompt:
    """Read the translation prompt ``version`` from ``mella_assets/prompts/<version with _>.json``."""
    from mella_assets.lib.vlm import PROMPTS_DIR

    path = PROMPTS_DIR / f"{version.replace('-', '_')}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if data["version"] != version:
        raise ValueError(f"{path} holds prompt version {data['version']!r}, not {version!r}")
    return TranslationPrompt(version=data["version"], system=data.get("system", ""), text=data["text"])


class OpenAITranslator:
    """The translator role over chat completions: one request per caption (the server's model handles long
    text itself; NLLB-style sentence splitting is for in-process seq2seq models)."""

    def __init__(self, client: ChatCompletionsClient, prompt: TranslationPrompt | None = None) -> None:
        self.client = client
        self.prompt = prompt or load_translation_prompt()

    @property
    def version(self) -> str:
        """Served model name and prompt version: part of cache keys."""
        return f"openai:{self.client.model}:{self.prompt.version}"

    def translate(
        self,
        texts: Sequence[str],
        target_code: str,
        source_code: str = "eng_Latn",
        max_new_tokens: int = 64,
        batch_size: int = 16,
    ) -> list[str | ItemError]:
        """One translation per text, in order; an empty text stays empty without a request."""
        todo = [i for i, text in enumerate(texts) if text.strip()]
        results = self.client.complete_many(
            [self.prompt.render(texts[i], source_code, target_code) for i in todo], max_new_tokens
        )
        out: list[str | ItemError] = [""] * len(texts)
        for i, result in zip(todo, results, strict=True):
            if isinstance(result, ItemError):
                out[i] = result
            else:
                out[i] = truncated(result, max_new_tokens) or result.text
        return out
