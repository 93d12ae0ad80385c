"""A small OpenAI-compatible chat-completions server on loopback that serves in-process models (the tiny ones in
tests) through the same transformers code as the ``transformers`` backend, with optional fault injection.

``POST /v1/chat/completions``: the request's ``model`` picks the role. The captioner — or any vision model served
under its own name through ``vlms`` (name → model, as vLLM serves a base model and LoRA modules side by side) —
gets the user turn's ``image_url`` (a base64 ``data:`` URL) and text; the translator gets the text of the
``translate-v1`` prompt, from which the target NLLB code and the source text are read back (a seq2seq model takes
codes, not instructions).

Faults (for retry / timeout tests): ``error_every=n`` answers every n-th request with 429 (with ``Retry-After``)
or 500, alternately; ``stall_first_s=s`` makes the first request for each distinct body wait ``s`` seconds and
drop the connection without an answer, so the client must time out and retry.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mella_assets.lib.openai_backend import decode_data_url

_TRANSLATE_REQUEST = re.compile(
    r"into .*? \((?P<target>[a-z]{3}_[A-Z][a-z]{3})\)\. Reply with the translation only\.\n\n(?P<text>.*)\Z", re.S
)


@dataclass
class Faults:
    """Which requests fail, and how."""

    error_every: int = 0
    retry_after: str | None = "0"
    stall_first_s: float = 0.0
    # Answer `finish_reason: length` when the completion used all of max_tokens, as vLLM does.
    report_length: bool = False


@dataclass
class ServerLog:
    """What the server saw: every request's body hash, arrival time and answered status, and every vision
    request's (model name, image size, prompt)."""

    events: list[tuple[str, float, int]] = field(default_factory=list)
    vision_requests: list[tuple[str, tuple[int, int], str]] = field(default_factory=list)
    image_urls: list[str] = field(default_factory=list)  # the data: URL of every vision request, as sent
    statuses: Counter[int] = field(default_factory=Counter)
    max_in_flight: int = 0
    model_calls: int = 0


class ChatCompletionsServer:
    """Serve ``captioner`` (a ``VisionLanguageModel``) and / or ``translator`` (a ``Translator``) on loopback."""

    def __init__(
        self,
        captioner: Any = None,
        translator: Any = None,
        captioner_name: str = "tiny-captioner",
        translator_name: str = "tiny-translator",
        faults: Faults | None = None,
        api_key: str | None = None,
        vlms: dict[str, Any] | None = None,
    ) -> None:
        self.captioner, self.translator = captioner, translator
        self.vlms = dict(vlms or {})
        self.captioner_name, self.translator_name = captioner_name, translator_name
        self.faults = faults or Faults()
        self.api_key = api_key
        self.log = ServerLog()
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()  # one generate() at a time: the models are not thread-safe
        self._seen: set[str] = set()
        self._in_flight = 0
        self._arrivals = 0
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatCompletionsServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: tests read ServerLog instead
                pass

            def do_POST(self) -> None:  # http.server dispatches on this name
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # -- request handling -------------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length", "0")))
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            self._in_flight += 1
            self.log.max_in_flight = max(self.log.max_in_flight, self._in_flight)
            self._arrivals += 1
            number = self._arrivals
            first_time = digest not in self._seen
            self._seen.add(digest)
        try:
            status = self._respond(request, body, digest, number, first_time)
        finally:
            with self._lock:
                self._in_flight -= 1
        if status == 0:  # no answer at all: nothing was logged yet
            self._record(digest, status)

    def _record(self, digest: str, status: int) -> None:
        with self._lock:
            self.log.events.append((digest, time.monotonic(), status))
            self.log.statuses[status] += 1

    def _answer(
        self, request: BaseHTTPRequestHandler, digest: str, status: int, payload: dict, headers: dict | None = None
    ) -> int:
        """Log the answer, then send it: a client that has its answer finds it in the log already."""
        self._record(digest, status)
        return _send(request, status, payload, headers)

    def _respond(self, request: BaseHTTPRequestHandler, body: bytes, digest: str, number: int, first_time: bool) -> int:
        faults = self.faults
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._answer(request, digest, 401, {"error": {"message": "invalid API key"}})
        if faults.stall_first_s and first_time:
            time.sleep(faults.stall_first_s)
            request.close_connection = True
            return 0  # no answer at all: the client's timeout must fire
        if faults.error_every and number % faults.error_every == 0:
            if (number // faults.error_every) % 2:
                headers = {"Retry-After": faults.retry_after} if faults.retry_after is not None else {}
                return self._answer(request, digest, 429, {"error": {"message": "rate limited"}}, headers)
            return self._answer(request, digest, 500, {"error": {"message": "internal error"}})
        try:
            payload = json.loads(body)
            text, prompt_tokens, completion_tokens = self._complete(payload)
        except (ValueError, KeyError, TypeError) as error:
            return self._answer(request, digest, 400, {"error": {"message": f"bad request: {error}"}})
        cut = faults.report_length and completion_tokens >= int(payload.get("max_tokens") or 64)
        finish_reason = "length" if cut else "stop"
        return self._answer(
            request,
            digest,
            200,
            {
                "object": "chat.completion",
                "model": payload["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    def _complete(self, payload: dict[str, Any]) -> tuple[str, int, int]:
        max_tokens = int(payload.get("max_tokens") or 64)
        user = next(m for m in reversed(payload["messages"]) if m["role"] == "user")
        vlm = self.vlms.get(payload["model"])
        if vlm is None and payload["model"] == self.captioner_name:
            vlm = self.captioner
        if vlm is not None:
            parts = user["content"]
            url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
            image = decode_data_url(url)
            prompt = "".join(p["text"] for p in parts if p["type"] == "text")
            with self._model_lock:
                self.log.model_calls += 1
                self.log.vision_requests.append((payload["model"], image.size, prompt))
                self.log.image_urls.append(url)
                (out,) = vlm.generate([image], [prompt], max_new_tokens=max_tokens, batch_size=1)
            return out.text, out.prompt_tokens, out.new_tokens
        if payload["model"] == self.translator_name and self.translator is not None:
            content = user["content"] if isinstance(user["content"], str) else user["content"][0]["text"]
            match = _TRANSLATE_REQUEST.search(content)
            if match is None:
                raise ValueError("not a translate-v1 prompt")
            with self._model_lock:
                self.log.model_calls += 1
                (out,) = self.translator.translate(
                    [match["text"]], match["target"], max_new_tokens=max_tokens, batch_size=1
                )
            tokenizer = self.translator.tokenizer
            return out, len(tokenizer.encode(match["text"])), len(tokenizer.encode(out, add_special_tokens=False))
        raise KeyError(f"unknown model {payload['model']!r}")


def _send(request: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict[str, str] | None = None) -> int:
    data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    try:
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (timeout) before the answer
    return status
