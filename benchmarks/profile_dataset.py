"""Profile ``build_sft_records`` at 1,000,000 candidate records, before and after an optimisation.

    python -m benchmarks.profile_dataset [--before REV] [--rows N] [--images N]

``--before`` names a git revision whose ``mella_assets/dataset/build.py`` is loaded as a separate module (default:
b40ca24, the last revision before the dataset stage was moved onto whole columns); the working tree's module is
"after". Both run on the same input (``bench_dataset.candidate_frames``), their records are asserted equal, and
pyinstrument's call trees go to ``benchmarks/results/profile_dataset_{before,after}.txt`` with a summary of the
functions that changed on stdout. Needs the dev tool pyinstrument.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from polars.testing import assert_frame_equal

from benchmarks.bench_dataset import candidate_frames

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_BEFORE = "b40ca24"
# The functions whose share of the time the summary follows (the hot spots of the "before" profile).
WATCHED = (
    "build_sft_records",
    "merge_sources",
    "apply_mix",
    "assign_splits",
    "near_duplicate_pairs",
    "record_id",
    "record_ids",
    "_rank",
    "ranks",
    "dumps",
    "with_prompts",
    "_page_provenance",
)


def load_revision(revision: str):
    """``mella_assets.dataset.build`` as it was at ``revision``, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:mella_assets/dataset/build.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # Its prompt bank path is relative to its own file: point it at the working tree's bank.
    source = source.replace(
        'Path(__file__).resolve().parent.parent / "prompts" / "prompt_bank.json"',
        f"Path({str(ROOT / 'mella_assets' / 'prompts' / 'prompt_bank.json')!r})",
    )
    folder = Path(tempfile.mkdtemp(prefix="mella-before-"))
    path = folder / f"dataset_{revision}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"dataset_{revision}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def profile(module, know, ling, language):
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.002)
    started = time.perf_counter()
    profiler.start()
    build = module.build_sft_records(know, ling, language)
    profiler.stop()
    return build, time.perf_counter() - started, profiler


def function_seconds(profiler) -> dict[str, float]:
    """Total time per watched function name (the sum over the call tree, not double-counting recursion)."""
    totals: dict[str, float] = {}

    def walk(frame, inside: frozenset[str]) -> None:
        name = frame.function
        if name in WATCHED and name not in inside:
            totals[name] = totals.get(name, 0.0) + frame.time
            inside = inside | {name}
        for child in frame.children:
            walk(child, inside)

    root = profiler.last_session.root_frame() if hasattr(profiler, "last_session") else profiler.root_frame()
    walk(root, frozenset())
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=DEFAULT_BEFORE)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=50_000)
    args = parser.parse_args()
    from mella_assets.dataset import build as after
    from mella_assets.languages import LANGUAGES

    before = load_revision(args.before)
    know, ling = candidate_frames(args.rows, args.images)
    # The old revision took the language code; the working tree takes the registry's Language.
    old, old_seconds, old_profile = profile(before, know, ling, "cs")
    new, new_seconds, new_profile = profile(after, know, ling, LANGUAGES["cs"])
    assert_frame_equal(old.records, new.records)
    assert_frame_equal(old.rejects, new.rejects)
    RESULTS.mkdir(exist_ok=True)
    for label, profiler in (("before", old_profile), ("after", new_profile)):
        (RESULTS / f"profile_dataset_{label}.txt").write_text(profiler.output_text(unicode=False))
    old_parts, new_parts = function_seconds(old_profile), function_seconds(new_profile)
    print(f"build_sft_records, {args.rows:,} rows over {args.images:,} images: identical records")
    print(f"  before ({args.before}): {old_seconds:.2f} s   after (working tree): {new_seconds:.2f} s   "
          f"speed-up {old_seconds / new_seconds:.2f}x")  # fmt: skip
    print(f"  {'function':<22} {'before s':>9} {'after s':>9}")
    for name in WATCHED:
        if name in old_parts or name in new_parts:
            print(f"  {name:<22} {old_parts.get(name, 0.0):9.2f} {new_parts.get(name, 0.0):9.2f}")
    print(f"profiles: {RESULTS}/profile_dataset_before.txt, profile_dataset_after.txt")


if __name__ == "__main__":
    main()
