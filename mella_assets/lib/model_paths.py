"""Validate a model reference before anything loads it: a local folder that exists (inside the allowed roots when
``MELLA_MODEL_ROOTS`` names some), or a well-formed hub id. ``lake://`` references are the lake's to check (its
key validation refuses traversal).

Without this a missing folder reaches ``from_pretrained`` as a "hub id" and fails there with a hub or network
message, and a file or a ``..`` path is fingerprinted and loaded from wherever it points.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mella_assets.settings import Settings, load_settings

# A model reference that names a folder of the lake (lake://models/tiny/captioner), resolved by the Lake resource.
LAKE_URI_PREFIX = "lake://"
MODEL_ROOTS_ENV = "MELLA_MODEL_ROOTS"
# huggingface_hub's repo id rule: [namespace/]name, letters, digits, '-', '_', '.', at most 96 characters,
# no '--' or '..', not starting or ending with '-' or '.'.
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}")


class ModelReferenceError(ValueError):
    """A model setting that names nothing loadable; the message says what is wrong and how to fix it."""


def _looks_like_path(model: str) -> bool:
    return (
        model.startswith(("/", "./", "../", "~", "file:", "\\"))
        or model in {".", ".."}
        or "\\" in model
        or model.count("/") > 1
        or os.path.exists(model)
    )


def allowed_model_roots(settings: Settings | None = None) -> list[Path]:
    """Folders a local model must lie in: the setting ``MELLA_MODEL_ROOTS`` (``os.pathsep``-separated) of
    ``settings`` (default: the settings loaded now); empty = any."""
    return list((settings if settings is not None else load_settings()).model_roots)


def check_model_reference(model: str, roots: list[Path] | None = None) -> str:
    """``model`` as ``from_pretrained`` should get it: a resolved local folder, or the hub id unchanged.

    Raises :class:`ModelReferenceError` for an empty value, a path that does not exist or is not a folder, a
    folder outside ``roots`` (default: :func:`allowed_model_roots`; symbolic links are followed first), and a
    value that is neither a path nor a valid hub id."""
    text = (model or "").strip()
    if not text:
        raise ModelReferenceError("no model given: set a hub id, a local folder or a lake:// folder")
    if text.startswith(LAKE_URI_PREFIX):
        return text
    if _looks_like_path(text):
        raw = unquote(urlsplit(text).path) if text.startswith("file:") else text
        path = Path(raw).expanduser()
        if not path.exists():
            raise ModelReferenceError(f"model folder {raw!r} does not exist")
        if not path.is_dir():
            raise ModelReferenceError(f"model path {raw!r} is not a folder (a checkpoint is a folder of files)")
        resolved = path.resolve()
        allowed = allowed_model_roots() if roots is None else roots
        if allowed and not any(resolved.is_relative_to(root) for root in allowed):
            places = ", ".join(str(root) for root in allowed)
            raise ModelReferenceError(f"model folder {str(resolved)!r} is outside {MODEL_ROOTS_ENV} ({places})")
        return str(resolved)
    if not _HUB_ID.fullmatch(text) or "--" in text or ".." in text or text.endswith((".", "-")):
        raise ModelReferenceError(f"model {text!r} is neither an existing folder nor a hub id like 'org/name'")
    return text
