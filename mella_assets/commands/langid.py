"""`mella langid`: one line per stdin line, ``<code or und>\\t<confidence>``, with the pipeline's detector and
rules (script rules, CLD2 for clear texts, lingua for the rest, Serbian / Croatian / Bosnian words for Latin
Serbian).

A line is identified by its first :data:`MAX_LINE_CHARS` characters (cut back to the last space in the second half
of them, so that no word is cut), and no more than :data:`MAX_LINE_BYTES` bytes of a line are ever held: the rest
is read and dropped. The pipeline identifies alt texts and captions, a few hundred characters at most; lingua's
time grows faster than linearly with a text's length (one line of a single repeated letter: 4,000 characters 0.1 s,
16,000 1 s, 100,000 10 s; a 1 MB line did not finish in minutes), and a thousand characters say which language a
text is in as well as a million do.

The first line that needs lingua waits for its models to load (5-30 s on a busy 2-core machine: a two-word
Latin line meets the n-gram models of all 49 Latin-script languages, as in the pipeline). Typed at a terminal
(or with ``--quick-after``), a line whose exact answer has not come after :data:`QUICK_AFTER_S` seconds is answered
from lingua's low-accuracy models instead (about a second to load), marked ``quick`` in a third column, while a
child process loads the exact models; later lines get exact answers again once it has them. Piped input always
gets the exact answers (a script's output must not depend on the machine's load). Lines that the script rules and
CLD2 settle are exact and immediate either way.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from typing import BinaryIO

from mella_assets.languages import LANGUAGES, REGISTRY
from mella_assets.lib.langid import (
    BACKENDS,
    Detection,
    LanguageIdentifier,
    identify_many,
    identify_without_lingua,
    load_models_on_demand,
)
from mella_assets.lib.page_language import page_language
from mella_assets.settings import load_settings

BATCH = 2048
# What of a line is identified (characters) and read (bytes: UTF-8 needs at most 4 a character).
MAX_LINE_CHARS = 1000
MAX_LINE_BYTES = 4 * MAX_LINE_CHARS + 4
_DROP_BYTES = 1 << 16
# At a terminal: how long a line waits for its exact answer before the quick one is printed (the quick models load
# in about a second, so a first line is answered in under 3 s).
QUICK_AFTER_S = 1.0
QUICK_MARK = "quick"


def bounded_lines(stream: BinaryIO, max_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Each line of ``stream`` (without its line break), cut to its first ``max_bytes`` bytes; the rest of a longer
    line is read in chunks and dropped, so memory stays bounded whatever the line's length."""
    while True:
        head = stream.readline(max_bytes + 1)
        if not head:
            return
        if len(head) > max_bytes and not head.endswith(b"\n"):
            while (rest := stream.readline(_DROP_BYTES)) and not rest.endswith(b"\n"):
                pass
        yield head[:max_bytes].rstrip(b"\r\n")


def line_sample(raw: bytes, max_chars: int = MAX_LINE_CHARS) -> str:
    """The text identified for one line: its first ``max_chars`` characters, cut back to the last whitespace in
    their second half when the line is longer."""
    text = raw.decode("utf-8", errors="replace")
    if len(text) <= max_chars:
        return text
    text = text[:max_chars]
    cut = max(text.rfind(" "), text.rfind("\t"))
    return text[:cut] if cut >= max_chars // 2 else text


def _input_waiting(stream: BinaryIO) -> bool:
    """Whether the next read of ``stream`` would not wait: its descriptor is readable (data or end of input). A
    stream without a descriptor counts as waiting input. Lines already in Python's buffer are not seen, so a
    batch may end early there: smaller batches, the same answers."""
    try:
        return bool(select.select([stream], [], [], 0)[0])
    except (OSError, ValueError, io.UnsupportedOperation):
        return True


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--languages", help="comma-separated target codes (default: the configured languages)")
    parser.add_argument("--backend", choices=BACKENDS, default=load_settings().langid_backend, help="detector")
    parser.add_argument(
        "--drop-undecided-serbian",
        action="store_true",
        help="do not keep Latin text whose words read as Serbian, Croatian and Bosnian alike for Serbian",
    )
    parser.add_argument(
        "--page-lang",
        help="the page's declared language (<html lang> or og:locale, e.g. sr-Latn-RS) for every line: the prior "
        "the pipeline uses for close calls",
    )
    parser.add_argument(
        "--page-url",
        help="the page's address for every line: its national domain (.rs, .hr) is the prior when "
        "--page-lang is absent or English",
    )
    parser.add_argument(
        "--quick-after",
        type=float,
        metavar="SECONDS",
        help="answer a line from lingua's low-accuracy models (third column 'quick') when its exact answer has not "
        f"come after SECONDS while the exact models load (default: {QUICK_AFTER_S} at a terminal, never for piped "
        "input; 0: quick answers only)",
    )
    return parser


def _exit_with(parent: int) -> None:
    """End this (child) process when ``parent`` is gone: a parent killed by a signal closes no pipe the child may
    be waiting on, and a child still loading models would otherwise live on as an orphan holding ≈ 1 GB."""
    with contextlib.suppress(AttributeError, OSError):  # Linux: the kernel kills the child with its parent.
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch() -> None:  # elsewhere (and if the parent died before prctl): reparented means orphaned
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _serve_exact(connection: Connection, identifier: LanguageIdentifier, parent: int) -> None:
    """The exact worker's loop: (batch id, texts, page prior) in, (batch id, detections) out, until the pipe
    closes or the parent is gone."""
    _exit_with(parent)
    # Below the parent's priority: on a busy machine the quick models, loading in the parent meanwhile, come first.
    os.nice(10)
    while True:
        try:
            batch_id, texts, prior = connection.recv()
        except (EOFError, OSError):
            return
        connection.send((batch_id, identify_many(identifier, texts, [prior] * len(texts))))


class QuickAnswers:
    """Answers for a terminal: exact when they come within ``quick_after`` seconds, else from the low-accuracy
    models, marked. The exact answers are computed in a child process: lingua holds the GIL while it loads a
    model (measured: a thread loading the models stops the main thread's quick answers for the whole load)."""

    def __init__(self, identifier: LanguageIdentifier, quick: LanguageIdentifier, prior: str | None, after: float):
        self.identifier, self.quick, self.prior = identifier, quick, prior
        self.after: float | None = after
        self._connection: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._batches = 0

    def answer(self, texts: Sequence[str]) -> list[tuple[Detection, bool]]:
        """(detection, whether it is a quick one) per text, in order."""
        settled = identify_without_lingua(self.identifier, texts, [self.prior] * len(texts))
        pending = [i for i, detection in enumerate(settled) if detection is None]
        answered, quick = self._lingua_answers([texts[i] for i in pending]) if pending else ([], False)
        found = dict(zip(pending, answered, strict=True))
        return [(found[i], quick) if detection is None else (detection, False) for i, detection in enumerate(settled)]

    def _lingua_answers(self, texts: list[str]) -> tuple[list[Detection], bool]:
        """The exact answers if they come in time, else the quick ones; and whether they are the quick ones."""
        priors = [self.prior] * len(texts)
        if self.after is None:  # the worker died: exact answers in this process
            return identify_many(self.identifier, texts, priors), False
        deadline = time.monotonic() + self.after
        batch_id = self._submit(texts) if self.after > 0 else None
        quick = identify_many(self.quick, texts, priors)  # while the child works on the exact ones
        exact = self._receive(batch_id, deadline) if batch_id is not None else None
        return (quick, True) if exact is None else (exact, False)

    def _submit(self, texts: list[str]) -> int:
        if self._process is None:
            # fork: the child starts with this process's modules and no lingua model loaded yet.
            context = multiprocessing.get_context("fork")
            self._connection, child = context.Pipe()
            self._process = context.Process(
                target=_serve_exact, args=(child, self.identifier, os.getpid()), daemon=True
            )
            self._process.start()
            child.close()
        self._batches += 1
        self._connection.send((self._batches, texts, self.prior))
        return self._batches

    def _receive(self, batch_id: int, deadline: float) -> list[Detection] | None:
        """The exact answers of ``batch_id`` if they come before ``deadline``; answers of earlier batches (already
        answered quickly) are dropped."""
        try:
            while self._connection.poll(max(0.0, deadline - time.monotonic())):
                got_id, detections = self._connection.recv()
                if got_id == batch_id:
                    return detections
        except (EOFError, OSError):  # the worker died (killed, out of memory)
            self.close()
            self.after = None
        return None

    def close(self) -> None:
        if self._process is not None:
            self._connection.close()
            self._process.kill()
            self._process.join()
            self._process = None


def run(args: argparse.Namespace) -> int:
    if args.languages:
        unknown = [c for c in args.languages.split(",") if c.strip() not in REGISTRY]
        if unknown:
            print(f"error: unknown language codes {unknown}; known: {sorted(REGISTRY)}", file=sys.stderr)
            return 2
        targets = [REGISTRY[c.strip()] for c in args.languages.split(",")]
    else:
        targets = list(LANGUAGES.values())
    load_models_on_demand()  # answer the first line without loading every language's models first
    undecided = not args.drop_undecided_serbian
    identifier = LanguageIdentifier(args.backend, targets, accept_undecided_serbian=undecided)
    prior = page_language(args.page_lang, None, args.page_url).code
    stdin = sys.stdin.buffer
    batch: list[str] = []
    quick_after = args.quick_after
    if quick_after is None and _is_terminal(sys.stdin):
        quick_after = QUICK_AFTER_S
    quick = None
    if quick_after is not None and args.backend == "lingua":
        low = LanguageIdentifier(args.backend, targets, accept_undecided_serbian=undecided, low_accuracy=True)
        quick = QuickAnswers(identifier, low, prior, max(0.0, quick_after))

    def flush() -> None:
        if quick is None:
            answers = [(detection, False) for detection in identify_many(identifier, batch, [prior] * len(batch))]
        else:
            answers = quick.answer(batch)
        for detection, is_quick in answers:
            mark = f"\t{QUICK_MARK}" if is_quick else ""
            sys.stdout.write(f"{detection.label}\t{detection.confidence:.4f}{mark}\n")
        batch.clear()

    try:
        for raw in bounded_lines(stdin):
            batch.append(line_sample(raw))
            # A full batch, or nothing more to read yet (typed or piped slowly): answer what is here now, so the
            # first line is answered before the input ends; a file or fast pipe still fills whole batches.
            if len(batch) >= BATCH or not _input_waiting(stdin):
                flush()
                sys.stdout.flush()
        flush()
        sys.stdout.flush()
    finally:
        if quick is not None:
            quick.close()
    return 0


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = build_parser(
        subparsers.add_parser(
            "langid",
            help="language of each stdin line: <code|und>\\t<conf>",
            description=f"Language of each stdin line. A line is identified by its first {MAX_LINE_CHARS} characters.",
        )
    )
    parser.set_defaults(func=run)
