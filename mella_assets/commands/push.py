"""`mella push EXPORT_DIR --repo-id ORG/NAME`: check an export folder and upload it as a 🤗 Hub dataset repository.

Before anything is sent: every file in ``MANIFEST.json`` must be there with its size and sha256 (and agree with
``SHA256SUMS``), and the card's YAML front matter must hold what the Hub and ``datasets`` read (licence, languages,
task and size categories, configs whose splits match files). Only the manifest's files, ``MANIFEST.json`` and
``SHA256SUMS`` are uploaded; anything else in the folder is listed as skipped. ``--dry-run`` stops after the
checks and the list. The upload needs ``huggingface_hub`` (``pip install 'mella[hf]'``), a token (``HF_TOKEN`` or
``hf auth login``) and the network: ``HfApi.create_repo`` (``exist_ok``) then ``HfApi.upload_folder``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_FILES = ("MANIFEST.json", "SHA256SUMS")
_CHUNK = 1 << 20


class ExportCheckError(ValueError):
    """The folder is not an export the Hub can take as it is; the message says what is wrong."""


@dataclass
class PushPlan:
    """What an upload of ``folder`` sends: ``files`` (export-relative path, bytes), and what it leaves out."""

    folder: Path
    version: str
    files: list[tuple[str, int]]
    skipped: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_push(folder: Path) -> PushPlan:
    """Check the export in ``folder`` (manifest, checksums, card front matter) and list what an upload sends.
    Raises :class:`ExportCheckError` naming the first problems, or OSError for a folder that cannot be read."""
    from mella_assets.dataset.export import card_metadata_problems

    manifest_path = folder / "MANIFEST.json"
    if not folder.is_dir():
        raise FileNotFoundError(2, "no such export folder", str(folder))
    if not manifest_path.is_file():
        raise ExportCheckError(f"{folder} is not an export folder: it has no MANIFEST.json")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        listed = {entry["path"]: (int(entry["bytes"]), entry["sha256"]) for entry in manifest["files"]}
    except (ValueError, KeyError, TypeError) as error:
        raise ExportCheckError(f"MANIFEST.json cannot be read: {error}") from None
    problems = []
    for path, (size, digest) in sorted(listed.items()):
        local = folder / path
        if Path(path).is_absolute() or ".." in Path(path).parts:  # a manifest names files inside its folder only
            problems.append(f"{path}: outside the export folder")
        elif not local.is_file():
            problems.append(f"{path}: missing")
        elif local.stat().st_size != size:
            problems.append(f"{path}: {local.stat().st_size} bytes, MANIFEST.json says {size}")
        elif _sha256(local) != digest:
            problems.append(f"{path}: sha256 differs from MANIFEST.json")
    sums_path = folder / "SHA256SUMS"
    sums = {}
    if sums_path.is_file():
        for line in sums_path.read_text(encoding="utf-8").splitlines():
            digest, _, path = line.partition("  ")
            sums[path] = digest
    if sums != {path: digest for path, (_, digest) in listed.items()}:
        problems.append("SHA256SUMS does not list the same files and checksums as MANIFEST.json")
    card = folder / "README.md"
    if "README.md" not in listed or not card.is_file():
        problems.append("no README.md (the dataset card) in MANIFEST.json")
    elif not problems:
        problems += [f"README.md: {p}" for p in card_metadata_problems(card.read_text(encoding="utf-8"), set(listed))]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ExportCheckError("; ".join(problems[:3]) + more)
    uploaded = set(listed) | set(MANIFEST_FILES)
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    files = [(path, (folder / path).stat().st_size) for path in sorted(uploaded)]
    return PushPlan(folder, str(manifest.get("version", "")), files, [p for p in on_disk if p not in uploaded])


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def upload(plan: PushPlan, repo_id: str, private: bool, token: str) -> str:
    """Create the dataset repository if needed and upload the plan's files in one commit; returns its URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=plan.folder,
        allow_patterns=[path for path, _ in plan.files],
        commit_message=f"MELLA export {plan.version}".strip(),
    )
    return commit.commit_url


def _hub_token() -> str | None:
    try:
        from huggingface_hub import get_token
    except ImportError:
        return os.environ.get("HF_TOKEN") or None
    return get_token()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def cmd_push(args: argparse.Namespace) -> int:
    try:
        plan = prepare_push(Path(args.export_dir))
    except ExportCheckError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    visibility = "private" if args.private else "public"
    print(f"{len(plan.files)} files, {_megabytes(plan.total_bytes)} → datasets/{args.repo_id} ({visibility})")
    for path, size in plan.files:
        print(f"{size:>12}  {path}")
    for path in plan.skipped:
        print(f"{'skipped':>12}  {path} (not in MANIFEST.json)")
    if args.dry_run:
        print("dry run: checks passed, nothing uploaded")
        return 0
    # Checked before any network call, so a missing token or an offline machine is one clear line.
    token = _hub_token()
    if not token:
        print("error: no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run)", file=sys.stderr)
        return 1
    if _offline():
        print("error: HF_HUB_OFFLINE is set: unset it to upload (or use --dry-run)", file=sys.stderr)
        return 1
    try:
        url = upload(plan, args.repo_id, args.private, token)
    except ImportError:
        print("error: uploading needs huggingface_hub: pip install 'mella[hf]'", file=sys.stderr)
        return 1
    print(f"uploaded: {url}")
    return 0


def _repo_id(text: str) -> str:
    """An ``org/name`` dataset repository id (huggingface_hub's rule where it is installed)."""
    namespace, slash, name = text.partition("/")
    if not (namespace and slash and name):
        raise argparse.ArgumentTypeError(f"{text!r} is not ORG/NAME")
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:
        return text
    try:
        validate_repo_id(text)
    except HFValidationError as error:
        raise argparse.ArgumentTypeError(str(error).splitlines()[0]) from None
    return text


def register(sub: argparse._SubParsersAction) -> None:
    push = sub.add_parser(
        "push",
        help="check an export folder (manifest, checksums, card) and upload it as a Hugging Face dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("export_dir", help="an export folder, e.g. .mella/lake/exports/<version>")
    push.add_argument("--repo-id", required=True, type=_repo_id, help="the dataset repository, ORG/NAME")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--dry-run", action="store_true", help="check and list the files; upload nothing")
    push.set_defaults(func=cmd_push)
