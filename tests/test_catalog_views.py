import polars as pl

from mella_assets.lib.catalog import run_sql
from mella_assets.lib.lake import LakeStore


def small_lake(tmp_path) -> LakeStore:
    store = LakeStore(tmp_path)
    store.write_table("alt_text_pairs", "cs", pl.DataFrame({"language": ["cs"] * 3, "alt_text": ["a", "b", "c"]}))
    store.write_table(
        "alt_text_rejects",
        "cs",
        pl.DataFrame({"language": ["cs"] * 3, "reason": ["empty_alt", "empty_alt", "wrong_language"]}),
    )
    store.write_table("image_rejects", "cs", pl.DataFrame({"language": ["cs"], "reason": ["http_error_404"]}))
    store.write_table(
        "mella_dataset",
        "cs",
        pl.DataFrame(
            {
                "language": ["cs"] * 4,
                "source": ["know", "know", "ling", "ling"],
                "split": ["train", "test", "train", "test"],
                "image_sha256": ["a", "b", "a", "b"],
                "split_group": ["a", "b", "a", "b"],
                "domain": ["x.cz", "y.cz", "x.cz", None],
            }
        ),
    )
    return store


def test_the_funnel_view_counts_kept_and_rejected_rows_per_stage(tmp_path):
    rows = run_sql(small_lake(tmp_path), "SELECT * FROM funnel_by_language").rows()
    assert rows == [("cs", 1, "alt_text_pairs", 3, 3), ("cs", 2, "images", 0, 1), ("cs", 7, "mella_dataset", 4, 0)]


def test_the_rejects_view_counts_each_reason_of_each_rejects_table(tmp_path):
    rows = run_sql(small_lake(tmp_path), "SELECT * FROM rejects_by_reason").rows()
    assert rows == [
        ("cs", "alt_text_rejects", "empty_alt", 2),
        ("cs", "alt_text_rejects", "wrong_language", 1),
        ("cs", "image_rejects", "http_error_404", 1),
    ]


def test_pairs_per_domain_and_split_sizes_answer_from_the_dataset(tmp_path):
    store = small_lake(tmp_path)
    assert run_sql(store, "SELECT * FROM pairs_per_domain").rows() == [
        ("cs", "x.cz", 1, 1, 2, 1),
        ("cs", "(unknown)", 0, 1, 1, 1),
        ("cs", "y.cz", 1, 0, 1, 1),
    ]
    assert run_sql(store, "SELECT * FROM split_sizes").rows() == [
        ("cs", "know", "test", 1, 1, 1),
        ("cs", "know", "train", 1, 1, 1),
        ("cs", "ling", "test", 1, 1, 1),
        ("cs", "ling", "train", 1, 1, 1),
    ]


def test_views_over_missing_tables_are_simply_absent(tmp_path):
    store = LakeStore(tmp_path)
    store.write_table("d_know", "cs", pl.DataFrame({"language": ["cs"], "alt_text": ["a"]}))
    names = set(run_sql(store, "SELECT table_name FROM information_schema.tables")["table_name"])
    assert names == {"d_know", "funnel_by_language"}
