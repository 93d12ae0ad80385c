"""The whole-column forms of the dataset helpers give exactly what the row-by-row definitions give."""

import json
import random

import polars as pl

from mella_assets.dataset.build import (
    IMAGE_TOKEN,
    MIX_SALT,
    _rank,
    json_string,
    near_duplicate_pairs,
    prompts_for,
    ranks,
    record_id,
    record_ids,
    sha256_hex,
    with_prompts,
)

TRICKY = [
    'a "quoted" word',
    "back\\slash and /slash",
    "line\nbreak\ttab\rreturn\x00nul\x1fus\x7fdel",
    "Pražský hrad v zimě",
    "ไทย 한국어 العربية Русский",
    "\u2028 line separator",
    "",
]


def test_sha256_hex_matches_hashlib_in_order_and_keeps_nulls():
    import hashlib

    values = [*TRICKY, None]
    digests = sha256_hex(pl.Series("v", values)).to_list()
    assert digests[:-1] == [hashlib.sha256(v.encode()).hexdigest() for v in TRICKY]
    assert digests[-1] is None


def test_record_ids_and_ranks_equal_the_row_functions():
    rng = random.Random(3)
    frame = pl.DataFrame(
        {
            "source": [rng.choice(["know", "ling"]) for _ in range(500)],
            "image_sha256": [f"{rng.getrandbits(256):064x}" for _ in range(500)],
            "text": [rng.choice([*TRICKY, None]) for _ in range(500)],
        }
    )
    ids = record_ids(frame, "cs").to_list()
    expected = [record_id("cs", s, sha, t or "") for s, sha, t in frame.iter_rows()]
    assert ids == expected
    assert ranks(MIX_SALT, pl.Series(ids)).to_list() == [_rank(MIX_SALT, i) for i in ids]


def test_json_string_writes_what_json_dumps_writes():
    rng = random.Random(5)
    values = [*TRICKY, None, "".join(chr(c) for c in range(0x80))]
    values += ["".join(chr(rng.randrange(0, 0x3000)) for _ in range(20)) for _ in range(300)]
    written = pl.DataFrame({"v": values}, schema={"v": pl.String}).select(json_string(pl.col("v"))).to_series()
    assert written.to_list() == [json.dumps(v, ensure_ascii=False) for v in values]


def test_with_prompts_picks_the_bank_prompt_by_id_and_writes_the_conversation():
    frame = pl.DataFrame(
        {"source": ["know", "ling", "know"], "id": ["00000000aa", "ffffffffbb", "12345678cc"], "text": TRICKY[:3]}
    )
    out = with_prompts(frame, "cs")
    for row in out.iter_rows(named=True):
        prompts = prompts_for("cs", row["source"])
        assert row["prompt"] == prompts[int(row["id"][:8], 16) % len(prompts)]
        turns = [
            {"role": "user", "content": f"{IMAGE_TOKEN}\n{row['prompt']}"},
            {"role": "assistant", "content": row["text"]},
        ]
        assert row["conversation"] == json.dumps(turns, ensure_ascii=False)
    assert out["id"].to_list() == frame["id"].to_list()


def test_near_duplicate_pairs_across_tile_borders_equal_brute_force():
    rng = random.Random(11)
    values = [rng.getrandbits(64) for _ in range(300)]
    values += [v ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64)) for v in values[:40]]
    hexes = [f"{v:016x}" for v in values]
    expected = {
        (i, j)
        for i in range(len(values))
        for j in range(i + 1, len(values))
        if (values[i] ^ values[j]).bit_count() <= 6
    }
    # small tiles: many row and column borders
    assert set(near_duplicate_pairs(hexes, 6, tile_rows=7, tile_columns=13)) == expected
    assert set(near_duplicate_pairs(hexes, 6)) == expected
    assert len(near_duplicate_pairs(hexes, 6, tile_rows=7, tile_columns=13)) == len(expected)
