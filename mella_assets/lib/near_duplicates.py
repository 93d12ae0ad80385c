"""Exact and near-duplicate search over 64-bit dHashes that never compares all pairs.

Hashes are the 16-hex-digit strings the images stage stores (``phash``). Two hashes at most ``d`` bits apart,
cut into ``m`` bands, differ by at most ``d // m`` bits in at least one band (pigeonhole). So each band is an
equality join of a hash's band value, with up to ``d // m`` of its bits flipped, against the other hashes' band
values; only those candidates get the exact test ``bit_count(xor) <= d``. With ``m = d + 1`` no bit is flipped
(the plain banded join); :func:`plan_bands` picks the ``m`` with the fewest probes plus expected candidates for the
input size, because narrow bands make most pairs candidates: at the default 8 bits the plain join's 7-bit bands
give ~7 % of all pairs, three 21-bit bands probed with two flips (232 probes a band) ~0.03 % at 10^6 hashes.
Random hashes cost probes + candidates per hash, linear-ish in the input; a pathological input whose hashes share
a band value (not merely an equal hash: equal hashes are merged first) still makes every pair a candidate.

:func:`cluster_images` runs the joins in DuckDB over a SQL relation (e.g. ``read_parquet`` over lake files,
local or S3) or a polars frame, and gives image sha256 → cluster key (the smallest sha256 of the cluster):
images with the same sha256 or the same hash are one cluster, and clusters joined by near pairs are merged
(connected components, on integer ids in numpy). :func:`near_links` finds the pairs between two sets (one
language's images against the others'). :class:`BandIndex` is the same band index in memory for a stream, for
the order-dependent duplicate marking of the images stage.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl

HASH_BITS = 64
# Most flip masks a band may be probed with: beyond it a plan is never cheaper than more, narrower bands.
_MAX_PROBES_PER_BAND = 50_000
# A valid hash as stored: exactly 16 lowercase hex digits (RE2 in DuckDB: linear time).
_VALID_HASH_SQL = "regexp_full_match({column}, '[0-9a-f]{{16}}')"


@dataclass(frozen=True)
class BandPlan:
    """How hashes are cut: band widths (low bits first) and the bits flipped when a band is probed."""

    widths: tuple[int, ...]
    radius: int

    @property
    def shifts(self) -> tuple[int, ...]:
        return tuple(itertools.accumulate((0, *self.widths[:-1])))[: len(self.widths)]

    def flips(self, width: int) -> list[int]:
        """Every mask of at most ``radius`` set bits within ``width`` bits (0 first)."""
        return [
            sum(1 << bit for bit in bits)
            for count in range(min(self.radius, width) + 1)
            for bits in itertools.combinations(range(width), count)
        ]


def _widths(bands: int) -> tuple[int, ...]:
    return tuple(HASH_BITS // bands + (1 if i < HASH_BITS % bands else 0) for i in range(bands))


def _probes(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(min(radius, width) + 1))


def plan_bands(max_distance: int, size: int) -> BandPlan:
    """The band plan with the least expected work (probes + random-hash candidates) for ``size`` hashes within
    ``max_distance`` bits (0 ≤ max_distance < 64)."""
    if not 0 <= max_distance < HASH_BITS:
        raise ValueError(f"max_distance must be within 0..{HASH_BITS - 1}, not {max_distance}")
    best: tuple[float, BandPlan] | None = None
    for bands in range(1, max_distance + 2):
        radius = max_distance // bands
        widths = _widths(bands)
        if max(_probes(w, radius) for w in widths) > _MAX_PROBES_PER_BAND:
            continue
        cost = sum(_probes(w, radius) * (1 + size / 2**w) for w in widths)
        if best is None or cost < best[0]:
            best = (cost, BandPlan(widths, radius))
    assert best is not None  # bands = max_distance + 1 has radius 0: one probe a band
    return best[1]


# -- DuckDB: pairs and clusters, out of core ----------------------------------------------------------------------


def hash_value_sql(column: str) -> str:
    """SQL turning a stored hash column into UBIGINT, NULL when it is not 16 lowercase hex digits."""
    return f"CASE WHEN {_VALID_HASH_SQL.format(column=column)} THEN ('0x' || {column})::UBIGINT END"


def _band_tables(connection: duckdb.DuckDBPyConnection, plan: BandPlan, prefix: str) -> None:
    bands = [
        (band, shift, (1 << width) - 1)
        for band, (shift, width) in enumerate(zip(plan.shifts, plan.widths, strict=True))
    ]
    flips = [(band, flip) for band, width in enumerate(plan.widths) for flip in plan.flips(width)]
    connection.execute(f"CREATE OR REPLACE TEMP TABLE {prefix}_bands (band INTEGER, shift INTEGER, mask UBIGINT)")
    connection.executemany(f"INSERT INTO {prefix}_bands VALUES (?, ?, ?)", bands)
    connection.execute(f"CREATE OR REPLACE TEMP TABLE {prefix}_flips (band INTEGER, flip UBIGINT)")
    connection.register(f"{prefix}_flips_frame", _flips_frame(flips))
    connection.execute(f"INSERT INTO {prefix}_flips SELECT band, flip FROM {prefix}_flips_frame")
    connection.unregister(f"{prefix}_flips_frame")


def _flips_frame(flips: list[tuple[int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"band": [b for b, _ in flips], "flip": [f for _, f in flips]}, schema={"band": pl.Int32, "flip": pl.UInt64}
    )


def _keyed(table: str, prefix: str) -> str:
    return f"SELECT h, b.band, (h >> b.shift) & b.mask AS key FROM {table}, {prefix}_bands b"


def pairs_sql(left: str, right: str | None, max_distance: int, prefix: str) -> str:
    """SQL of the pairs ``(a, b)`` of hash values (column ``h`` of the tables ``left`` and ``right``, UBIGINT) at
    most ``max_distance`` bits apart; ``right=None`` pairs ``left`` with itself (``a < b``). Needs the band tables
    of :func:`prepare_bands` under ``prefix``."""
    other = right or left
    order = "AND p.h < k.h" if right is None else ""
    # The probe keys are a column of their own: with xor(p.key, f.flip) in the join condition DuckDB can only
    # join the hashes on the band number (every pair of a band) and filter afterwards.
    return (
        f"WITH keyed AS ({_keyed(left, prefix)}), "
        f"probe AS (SELECT p.h, p.band, xor(p.key, f.flip) AS key FROM keyed p JOIN {prefix}_flips f USING (band)), "
        f"target AS ({_keyed(other, prefix)}) "
        f"SELECT DISTINCT p.h AS a, k.h AS b FROM probe p JOIN target k ON k.band = p.band AND k.key = p.key "
        f"WHERE bit_count(xor(p.h, k.h)) <= {int(max_distance)} {order}"
    )


@contextlib.contextmanager
def written_join_order(connection: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run the band joins in the order written, the band table as the hash join's build side: DuckDB's
    estimates put the probes (hashes × flip masks, ~700 a hash) there instead: 240 s and 4.9 GB at 100k
    hashes, against 20 s and 0.3 GB in the written order (2-core machine)."""
    (before,) = connection.execute("SELECT current_setting('disabled_optimizers')").fetchone()
    connection.execute("SET disabled_optimizers = 'join_order,build_side_probe_side'")
    try:
        yield
    finally:
        connection.execute(f"SET disabled_optimizers = '{before}'" if before else "RESET disabled_optimizers")


def prepare_bands(connection: duckdb.DuckDBPyConnection, max_distance: int, size: int, prefix: str = "nd") -> None:
    """Create the band and flip tables of :func:`plan_bands` for ``size`` hashes in ``connection``."""
    _band_tables(connection, plan_bands(max_distance, size), prefix)


def _source(connection: duckdb.DuckDBPyConnection, source: str | pl.DataFrame, name: str) -> str:
    """A relation name for ``source``: a polars frame is registered, a SQL query is wrapped as a view."""
    if isinstance(source, pl.DataFrame):
        connection.register(name, source)
    else:
        connection.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {source}")
    return name


def parquet_sql(paths: list[str], columns: str = "*", where: str = "") -> str:
    """SQL reading ``paths`` (local paths or s3:// URLs the connection can read) as one relation."""
    quoted = ", ".join("'" + path.replace("'", "''") + "'" for path in paths)
    filtered = f" WHERE {where}" if where else ""
    return f"SELECT {columns} FROM read_parquet([{quoted}], hive_partitioning = false, union_by_name = true){filtered}"


def _components(nodes: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Per node, the smallest node id of its connected component (hook to the smaller root, then pointer jumping;
    every label only ever decreases, so each root is its component's minimum)."""
    labels = np.arange(nodes, dtype=np.int64)
    while left.size:
        low, high = labels[left], labels[right]
        mismatched = low != high
        if not mismatched.any():
            break
        low, high = low[mismatched], high[mismatched]
        smaller = np.minimum(low, high)
        np.minimum.at(labels, np.maximum(low, high), smaller)
        while True:
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
    return labels


def cluster_images(
    source: str | pl.DataFrame, max_distance: int, connection: duckdb.DuckDBPyConnection | None = None
) -> pl.DataFrame:
    """``image_sha256`` → ``cluster`` (the smallest sha256 of its cluster) for the rows ``(image_sha256, phash)``
    of ``source`` (a polars frame or a SQL query the connection can run), sorted by sha256.

    Images with the same sha256 or the same valid hash are one cluster, and so are hashes at most
    ``max_distance`` bits apart, transitively; an image without a valid hash is alone unless its sha256 joins it.
    """
    owned = connection is None
    connection = connection or duckdb.connect(":memory:")
    try:
        relation = _source(connection, source, "nd_source")
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE nd_rows AS SELECT DISTINCT image_sha256 AS sha, "
            f"{hash_value_sql('phash')} AS h FROM {relation} WHERE image_sha256 IS NOT NULL"
        )
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE nd_shas AS "
            "SELECT sha, (row_number() OVER (ORDER BY sha) - 1)::BIGINT AS id FROM (SELECT DISTINCT sha FROM nd_rows)"
        )
        (shas,) = connection.execute("SELECT count(*) FROM nd_shas").fetchone()
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE nd_hashes AS SELECT h, "
            f"(row_number() OVER (ORDER BY h) - 1 + {shas})::BIGINT AS id "
            "FROM (SELECT DISTINCT h FROM nd_rows WHERE h IS NOT NULL)"
        )
        (hashes,) = connection.execute("SELECT count(*) FROM nd_hashes").fetchone()
        edges = connection.execute(
            "SELECT s.id AS a, x.id AS b FROM nd_rows r JOIN nd_shas s USING (sha) JOIN nd_hashes x USING (h)"
        ).fetchnumpy()
        near = {"a": np.empty(0, np.int64), "b": np.empty(0, np.int64)}
        if max_distance >= HASH_BITS and hashes > 1:
            # Every pair is within the distance: a star on the first hash joins them all.
            near = connection.execute(
                f"SELECT {shas}::BIGINT AS a, id AS b FROM nd_hashes WHERE id > {shas}"
            ).fetchnumpy()
        elif 0 <= max_distance < HASH_BITS and hashes > 1:
            prepare_bands(connection, max_distance, hashes)
            with written_join_order(connection):
                connection.execute(
                    "CREATE OR REPLACE TEMP TABLE nd_pairs AS " + pairs_sql("nd_hashes", None, max_distance, "nd")
                )
            near = connection.execute(
                "SELECT ha.id AS a, hb.id AS b FROM nd_pairs p "
                "JOIN nd_hashes ha ON ha.h = p.a JOIN nd_hashes hb ON hb.h = p.b"
            ).fetchnumpy()
        left = np.concatenate([np.asarray(edges["a"], np.int64), np.asarray(near["a"], np.int64)])
        right = np.concatenate([np.asarray(edges["b"], np.int64), np.asarray(near["b"], np.int64)])
        labels = _components(shas + hashes, left, right)[:shas]
        connection.register("nd_labels", pl.DataFrame({"id": np.arange(shas, dtype=np.int64), "root": labels}))
        return connection.execute(
            "SELECT s.sha AS image_sha256, r.sha AS cluster FROM nd_labels l "
            "JOIN nd_shas s ON s.id = l.id JOIN nd_shas r ON r.id = l.root ORDER BY s.sha"
        ).pl()
    finally:
        if owned:
            connection.close()


def near_links(
    connection: duckdb.DuckDBPyConnection, own: str, others: str, max_distance: int, prefix: str = "nl"
) -> pl.DataFrame:
    """Pairs of rows of two SQL relations whose images are the same (sha256) or near duplicates (hashes at most
    ``max_distance`` bits apart; ``max_distance < 0``: same sha256 only). Both have ``image_sha256`` and
    ``phash``; every column of ``own`` but ``phash`` comes back as it is, every column of ``others`` but
    ``phash`` with the prefix ``other_`` (distinct rows)."""
    for side, query in (("own", own), ("others", others)):
        connection.execute(
            f"CREATE OR REPLACE TEMP TABLE {prefix}_{side} AS SELECT DISTINCT * EXCLUDE (phash), "
            f"{hash_value_sql('phash')} AS h FROM ({query}) WHERE image_sha256 IS NOT NULL"
        )

    def columns(side: str) -> list[str]:
        described = connection.execute(f"SELECT column_name FROM (DESCRIBE {prefix}_{side})").fetchall()
        return [column for (column,) in described if column != "h"]

    selected = ", ".join(
        [f'w."{column}"' for column in columns("own")] + [f'o."{c}" AS "other_{c}"' for c in columns("others")]
    )
    parts = [f"SELECT {selected} FROM {prefix}_own w JOIN {prefix}_others o USING (image_sha256)"]
    if max_distance >= 0:
        for side in ("own", "others"):
            connection.execute(
                f"CREATE OR REPLACE TEMP TABLE {prefix}_{side}_h AS "
                f"SELECT DISTINCT h FROM {prefix}_{side} WHERE h IS NOT NULL"
            )
        if max_distance >= HASH_BITS:
            pairs = f"SELECT a.h AS a, b.h AS b FROM {prefix}_own_h a, {prefix}_others_h b"
        else:
            (size,) = connection.execute(f"SELECT count(*) FROM {prefix}_others_h").fetchone()
            prepare_bands(connection, max_distance, max(size, 1), prefix)
            with written_join_order(connection):
                connection.execute(
                    f"CREATE OR REPLACE TEMP TABLE {prefix}_pairs AS "
                    + pairs_sql(f"{prefix}_own_h", f"{prefix}_others_h", max_distance, prefix)
                )
            pairs = f"SELECT a, b FROM {prefix}_pairs"
        parts.append(
            f"SELECT {selected} FROM ({pairs}) p JOIN {prefix}_own w ON w.h = p.a JOIN {prefix}_others o ON o.h = p.b"
        )
    return connection.execute(" UNION ".join(parts)).pl()


# -- in memory, for a stream ----------------------------------------------------------------------------------


class BandIndex:
    """64-bit hashes added one by one; :meth:`first_within` finds the earliest added hash within
    ``max_distance`` bits by probing band tables (the plan of :func:`plan_bands` for ``expected_size`` hashes),
    never by scanning every hash."""

    def __init__(self, max_distance: int, expected_size: int) -> None:
        self.max_distance = max_distance
        self.values: list[int] = []
        usable = 0 <= max_distance < HASH_BITS
        plan = plan_bands(max_distance, max(expected_size, 1)) if usable else BandPlan((), 0)
        self._bands = [
            (shift, (1 << width) - 1, plan.flips(width), defaultdict(list))
            for shift, width in zip(plan.shifts, plan.widths, strict=True)
        ]

    def add(self, value: int) -> int:
        """Index ``value`` (a 64-bit hash); returns its position."""
        if not 0 <= value < 1 << HASH_BITS:
            raise ValueError(f"not a 64-bit hash: {value:#x}")
        position = len(self.values)
        self.values.append(value)
        for shift, mask, _flips, table in self._bands:
            table[(value >> shift) & mask].append(position)
        return position

    def first_within(self, value: int) -> int | None:
        """The smallest position whose hash is at most ``max_distance`` bits from ``value``, or None."""
        if self.max_distance < 0 or not self.values:
            return None
        if self.max_distance >= HASH_BITS:
            return 0
        best: int | None = None
        for shift, mask, flips, table in self._bands:
            key = (value >> shift) & mask
            for flip in flips:
                # Each bucket is in insertion order: its first close hash is its earliest.
                for position in table.get(key ^ flip, ()):
                    if best is not None and position >= best:
                        break
                    if (self.values[position] ^ value).bit_count() <= self.max_distance:
                        best = position
                        break
        return best
