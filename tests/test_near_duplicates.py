"""The band-join near-duplicate search equals comparing every pair, on random and adversarial hashes."""

import random

import duckdb
import polars as pl
import pytest

from benchmarks.bench_near_duplicates import quadratic_marks
from mella_assets.know.images import mark_duplicates
from mella_assets.lib.near_duplicates import BandIndex, cluster_images, near_links, parquet_sql, plan_bands


def brute_force_clusters(shas: list[str], phashes: list[str | None], max_distance: int) -> dict[str, str]:
    """The specification: union every two images with the same sha256, the same valid hash or valid hashes at most
    ``max_distance`` bits apart (all pairs compared); key = smallest sha256."""
    parent = {sha: sha for sha in shas}

    def find(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    valid = [
        (sha, int(h, 16))
        for sha, h in zip(shas, phashes, strict=True)
        if isinstance(h, str) and len(h) == 16 and all(c in "0123456789abcdef" for c in h)
    ]
    for i, (sha_a, a) in enumerate(valid):
        for sha_b, b in valid[i + 1 :]:
            if (a ^ b).bit_count() <= max_distance:
                union(sha_a, sha_b)
    return {sha: find(sha) for sha in shas}


def flip(value: int, rng: random.Random, low: int, high: int) -> int:
    return value ^ sum(1 << bit for bit in rng.sample(range(64), rng.randint(low, high)))


def random_hashes(seed: int, n: int = 400) -> list[int]:
    """Random hashes, a third of them copies of earlier ones with 1-12 bits flipped (both sides of a threshold)."""
    rng = random.Random(seed)
    base = [rng.getrandbits(64) for _ in range(n - n // 3)]
    return base + [flip(rng.choice(base), rng, 1, 12) for _ in range(n // 3)]


def adversarial_hashes(seed: int) -> list[int]:
    """Hashes crowded into a few band values (the same high 44 bits), chains 1 bit apart that only transitivity
    joins, differences exactly at band borders, repeated values, all-zero and all-one."""
    rng = random.Random(seed)
    crowd = [(0xABCDE << 44) | rng.getrandbits(20) for _ in range(120)]
    chain, value = [], rng.getrandbits(64)
    for _ in range(30):
        value ^= 1 << rng.randrange(64)
        chain.append(value)
    border = [0, 1 << 20, 1 << 21, 1 << 22, 1 << 42, 1 << 43, (1 << 21) | (1 << 42), (1 << 64) - 1]
    border += [((1 << 64) - 1) ^ (1 << b) for b in (0, 21, 42, 63)]
    return crowd + chain + border + crowd[:10] + [0, 0]


CASES = [("random", seed, random_hashes(seed)) for seed in (1, 2)] + [("adversarial", 3, adversarial_hashes(3))]


@pytest.mark.parametrize("max_distance", [0, 1, 4, 8, 12, 63, 64])
@pytest.mark.parametrize(("kind", "seed", "values"), CASES, ids=[f"{k}-{s}" for k, s, _ in CASES])
def test_clusters_equal_comparing_every_pair(kind, seed, values, max_distance):
    rng = random.Random(seed)
    phashes: list[str | None] = [f"{v:016x}" for v in values]
    shas = [f"{i:064x}" for i in range(len(values))]
    # a few images re-found under the same sha256 with another hash, and hashes that are not 16 lowercase hex
    shas += [shas[rng.randrange(len(values))] for _ in range(5)]
    phashes += [f"{rng.getrandbits(64):016x}" for _ in range(5)]
    shas += ["f" * 63 + str(k) for k in range(5)]
    phashes += [None, "ABCDEF0123456789", "123", f"{values[0]:016x}\n", "g" * 16]
    frame = pl.DataFrame({"image_sha256": shas, "phash": phashes})
    got = dict(cluster_images(frame, max_distance).iter_rows())
    assert got == brute_force_clusters(shas, phashes, max_distance)


def test_clusters_read_from_parquet_files_equal_clusters_of_the_frame(tmp_path):
    values = random_hashes(5, 300)
    frame = pl.DataFrame({"image_sha256": [f"{i:064x}" for i in range(300)], "phash": [f"{v:016x}" for v in values]})
    frame[:150].write_parquet(tmp_path / "a.parquet")
    frame[150:].write_parquet(tmp_path / "b.parquet")
    query = parquet_sql([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")], "image_sha256, phash")
    assert cluster_images(query, 8).equals(cluster_images(frame, 8))
    clusters = cluster_images(frame, 8)
    assert clusters["image_sha256"].to_list() == sorted(frame["image_sha256"].to_list())
    assert clusters["cluster"].n_unique() < 300  # the copies joined their originals


@pytest.mark.parametrize("max_distance", [-1, 0, 3, 8])
def test_links_between_two_sets_are_exactly_the_close_or_identical_pairs(max_distance):
    rng = random.Random(9)
    own_values = random_hashes(9, 200)
    other_values = [flip(v, rng, 0, 10) for v in own_values[:100]] + [rng.getrandbits(64) for _ in range(100)]
    own = pl.DataFrame({"image_sha256": [f"o{i}" for i in range(200)], "phash": [f"{v:016x}" for v in own_values]})
    others = pl.DataFrame(
        {
            "image_sha256": [f"x{i}" for i in range(195)] + ["o0", "o1", "o2", "o3", "o4"],  # five shared files
            "phash": [f"{v:016x}" for v in other_values],
            "language": ["ru"] * 200,
        }
    )
    with duckdb.connect() as connection:
        connection.register("own", own)
        connection.register("others", others)
        links = near_links(connection, "SELECT * FROM own", "SELECT * FROM others", max_distance)
    got = set(links.select("image_sha256", "other_image_sha256").iter_rows())
    expected = {
        (a, b)
        for a, ha in own.iter_rows()
        for b, hb, _ in others.iter_rows()
        if a == b or (int(ha, 16) ^ int(hb, 16)).bit_count() <= max_distance
    }
    assert got == expected
    assert set(links["other_language"]) == {"ru"}
    assert {("o0", "o0"), ("o4", "o4")} <= got


@pytest.mark.parametrize("max_distance", [-1, 0, 2, 4, 8, 64])
def test_the_band_index_finds_the_earliest_close_hash_as_a_scan_would(max_distance):
    values = random_hashes(11, 300) + adversarial_hashes(11)
    index = BandIndex(max_distance, len(values))
    added: list[int] = []
    for value in values:
        scan = next((i for i, v in enumerate(added) if (v ^ value).bit_count() <= max_distance), None)
        assert index.first_within(value) == scan
        if scan is None or len(added) % 3 == 0:  # also index some hashes close to indexed ones
            added.append(value)
            index.add(value)


@pytest.mark.parametrize("max_bits", [0, 4, 8])
def test_marking_duplicates_gives_what_the_quadratic_scan_gave(max_bits):
    rng = random.Random(13)
    values = random_hashes(13, 300) + adversarial_hashes(13)
    shas = [f"{i:064x}" for i in range(len(values))]
    # the same bytes fetched again from other URLs, including bytes first marked as a near duplicate
    order = list(range(len(values))) + [rng.randrange(len(values)) for _ in range(80)]
    rng.shuffle(order)
    shas_in, phashes_in = [shas[i] for i in order], [f"{values[i]:016x}" for i in order]
    marks = mark_duplicates(shas_in, phashes_in, max_bits)
    assert marks == quadratic_marks(shas_in, phashes_in, max_bits)  # the scan as it was (the benchmark's baseline)
    assert {reason for reason, _ in marks} == {None, "duplicate_image", "near_duplicate_image"}


def test_every_band_plan_keeps_the_pigeonhole_guarantee():
    for max_distance in range(64):
        for size in (10, 10_000, 1_000_000, 100_000_000):
            plan = plan_bands(max_distance, size)
            assert sum(plan.widths) == 64
            # every band more than `radius` bits apart would make the hashes more than max_distance apart
            assert len(plan.widths) * (plan.radius + 1) > max_distance
    assert plan_bands(8, 1_000_000).widths == (22, 21, 21)  # three wide bands, two flipped bits each
    with pytest.raises(ValueError, match="max_distance"):
        plan_bands(64, 10)
