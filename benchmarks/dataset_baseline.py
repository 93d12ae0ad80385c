"""A pure-Python ``build_sft_records`` (lists, dicts, hashlib, json) for the benchmark's baseline.

It does what :func:`mella_assets.dataset.build.build_sft_records` does with the default policies and no previous
table (merge the two sources with provenance, drop duplicate records, drop empty answers and missing images,
cluster images by sha256 and dHash, draw the test clusters, pick prompts, write the conversations, sort) and
gives the same records; the benchmark asserts that. The quadratic dHash pair search is the same numpy
``near_duplicate_pairs`` in both (its own row in the report): a pure-Python all-pairs loop would only measure
that loop.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

from mella_assets.dataset.build import (
    IMAGE_TOKEN,
    MIX_SALT,
    SOURCES,
    SPLIT_SALT,
    SplitPolicy,
    _rank,
    _UnionFind,
    _valid_phash,
    near_duplicate_pairs,
    prompts_for,
    record_id,
)


def python_build_sft_records(
    know: list[dict], ling: list[dict], language: str, policy: SplitPolicy | None = None
) -> list[dict]:
    """Records (``id``, ``source``, ``split_group``, ``split``, ``prompt``, ``conversation``) sorted by source, id.

    ``know`` rows: image_sha256, image_key, phash, alt_text, page_url, domain, image_url; ``ling`` rows:
    image_sha256, image_key, phash, text. Provenance columns must not be null (tuple comparison)."""
    policy = policy or SplitPolicy()
    provenance: dict[str, tuple[str, str, str]] = {}
    for row in know:
        key = (row["page_url"], row["domain"], row["image_url"])
        current = provenance.get(row["image_sha256"])
        if current is None or key < current:
            provenance[row["image_sha256"]] = key
    candidates = [
        {"source": "know", "image_sha256": r["image_sha256"], "image_key": r["image_key"], "phash": r["phash"],
         "text": r["alt_text"]}
        for r in know
    ] + [
        {"source": "ling", "image_sha256": r["image_sha256"], "image_key": r["image_key"], "phash": r["phash"],
         "text": r["text"]}
        for r in ling
    ]  # fmt: skip
    seen: set[str] = set()
    kept = []
    for record in candidates:
        rid = record_id(language, record["source"], record["image_sha256"], record["text"] or "")
        if rid in seen:
            continue
        seen.add(rid)
        text, key = record["text"], record["image_key"]
        if text is None or not text.strip() or not key:
            continue
        kept.append({**record, "id": rid, "_rank": _rank(MIX_SALT, rid)})
    kept.sort(key=lambda r: r["_rank"])

    # clusters: same sha256, same dHash, or dHashes within max_distance bits
    shas = sorted({r["image_sha256"] for r in kept})
    union = _UnionFind(shas)
    by_hash: dict[str, list[str]] = defaultdict(list)
    for sha, phash in sorted({(r["image_sha256"], r["phash"]) for r in kept}):
        if _valid_phash(phash):
            by_hash[phash].append(sha)
    for members in by_hash.values():
        for other in members[1:]:
            union.union(members[0], other)
    hashes = sorted(by_hash)
    for i, j in near_duplicate_pairs(hashes, policy.max_distance):
        union.union(by_hash[hashes[i]][0], by_hash[hashes[j]][0])
    cluster_of = {sha: union.find(sha) for sha in shas}
    rank: dict[str, int] = {}
    for sha, cluster in cluster_of.items():
        value = _rank(SPLIT_SALT, sha)
        rank[cluster] = min(rank.get(cluster, value), value)

    test: set[str] = set()
    for source in SOURCES:
        clusters = {cluster_of[r["image_sha256"]] for r in kept if r["source"] == source}
        if len(clusters) < 2:
            continue
        target = min(
            policy.test_groups_per_source, max(1, math.floor(policy.max_test_share * len(clusters))), len(clusters) - 1
        )
        missing = target - len(test & clusters)
        if missing > 0:
            test.update(sorted(clusters - test, key=lambda c: (rank[c], c))[:missing])

    prompts = {source: prompts_for(language, source) for source in SOURCES}
    records = []
    for r in kept:
        bank = prompts[r["source"]]
        prompt = bank[int(r["id"][:8], 16) % len(bank)]
        group = cluster_of[r["image_sha256"]]
        turns = [{"role": "user", "content": f"{IMAGE_TOKEN}\n{prompt}"}, {"role": "assistant", "content": r["text"]}]
        records.append(
            {
                "id": r["id"],
                "source": r["source"],
                "split_group": group,
                "split": "test" if group in test else "train",
                "prompt": prompt,
                "conversation": json.dumps(turns, ensure_ascii=False),
            }
        )
    records.sort(key=lambda r: (r["source"], r["id"]))
    return records
