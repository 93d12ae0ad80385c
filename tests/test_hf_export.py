"""The export as 🤗 datasets reads it: `load_dataset(<export folder>)` through the card's configs and
`load_dataset("parquet", data_files=...)` on its parts, with images that decode; and `mella push`, which checks the
folder before an upload (the upload itself needs the network: only the dry run and the refusals run here)."""

import hashlib
import io
import json
import shutil
from pathlib import Path

import datasets
import polars as pl
import pyarrow.parquet as pq
import pytest
from dataset_helpers import CZECH_ALTS, CZECH_CAPTIONS, know_frame, ling_frame, picture, store_image
from huggingface_hub import DatasetCard
from PIL import Image

from mella_assets.cli import main
from mella_assets.dataset.build import build_sft_records
from mella_assets.dataset.export import (
    ExportOptions,
    card_metadata_problems,
    plan_shards,
    size_category,
    write_export,
)
from mella_assets.languages import LANGUAGES
from mella_assets.lib.lake import LakeStore


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """datasets must never reach for the Hub. It reads both variables once, at import: set them and its flag."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


VIETNAMESE_ALTS = [
    "Vịnh Hạ Long với những hòn đảo đá vôi",
    "Phố cổ Hội An về đêm với đèn lồng",
    "Bát phở bò Hà Nội nóng hổi buổi sáng",
    "Ruộng bậc thang Mù Cang Chải mùa lúa chín",
    "Chợ nổi Cái Răng trên sông Hậu",
    "Chùa Một Cột giữa lòng thủ đô",
    "Áo dài trắng của nữ sinh trên phố",
    "Cầu Rồng bắc qua sông Hàn ở Đà Nẵng",
]
VIETNAMESE_CAPTIONS = [f"Một bức ảnh chi tiết về cảnh số {n} với nhiều màu sắc rực rỡ" for n in range(8)]
# Distinct picture sizes per language, so a decoded image's size says which stored image it is.
SIZES = {"cs": (96, 72), "vi": (112, 84)}
# Small enough that the Czech train split needs more than one part.
PART_BYTES = 20_000


def build_records(store: LakeStore) -> pl.DataFrame:
    """Czech (12 images) and Vietnamese (8 images) SFT records built by the dataset code, images in the lake."""
    frames = []
    for code, alts, captions, first_seed in (
        ("cs", CZECH_ALTS, CZECH_CAPTIONS, 0),
        ("vi", VIETNAMESE_ALTS, VIETNAMESE_CAPTIONS, 100),
    ):
        images = [store_image(store, picture(first_seed + n, size=SIZES[code])) for n in range(len(alts))]
        build = build_sft_records(
            know_frame(code, images, alts), ling_frame(code, images, captions[: len(alts)]), LANGUAGES[code]
        )
        frames.append(build.records)
    return pl.concat(frames)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> dict:
    lake = tmp_path_factory.mktemp("lake")
    store = LakeStore(lake)
    records = build_records(store)
    write_export(store, "exports/v1", records, "v1", ExportOptions(hf_shard_max_bytes=PART_BYTES))
    return {"store": store, "records": records, "dir": lake / "exports" / "v1", "lake": lake}


def load(*args, cache: Path, **kwargs) -> datasets.DatasetDict:
    return datasets.load_dataset(*args, cache_dir=str(cache), **kwargs)


def assert_rows_match_records(loaded: datasets.DatasetDict, records: pl.DataFrame, store: LakeStore) -> None:
    """Each split holds exactly that split's records: same ids, texts, prompts and images of the stored size."""
    assert set(loaded) == {"train", "test"}
    for split in ("train", "test"):
        expected = {row["id"]: row for row in records.filter(pl.col("split") == split).iter_rows(named=True)}
        part = loaded[split]
        assert part.num_rows == len(expected) > 0
        assert isinstance(part.features["image"], datasets.Image)
        for row in part:
            record = expected.pop(row["id"])
            assert (row["text"], row["prompt"], row["language"], row["source"]) == (
                record["text"],
                record["prompt"],
                record["language"],
                record["source"],
            )
            assert row["keywords"] == record["keywords"]
            assert isinstance(row["image"], Image.Image)
            stored = Image.open(io.BytesIO(store.get_bytes(record["image_key"])))
            assert row["image"].size == stored.size == SIZES[record["language"]]
        assert not expected  # every record came back


def test_load_dataset_on_the_export_folder_reads_the_cards_default_config(export, tmp_path):
    loaded = load(str(export["dir"]), cache=tmp_path)
    assert_rows_match_records(loaded, export["records"], export["store"])


def test_load_dataset_parquet_with_the_data_files_reads_the_same_rows(export, tmp_path):
    folder = export["dir"]
    files = {split: sorted(str(p) for p in folder.glob(f"data/*/{split}-*.parquet")) for split in ("train", "test")}
    loaded = load("parquet", data_files=files, cache=tmp_path)
    assert_rows_match_records(loaded, export["records"], export["store"])


def test_each_language_config_holds_that_language_only(export, tmp_path):
    records = export["records"]
    for code in ("cs", "vi"):
        loaded = load(str(export["dir"]), code, cache=tmp_path)
        assert_rows_match_records(loaded, records.filter(pl.col("language") == code), export["store"])


def test_the_card_front_matter_carries_the_hub_metadata(export):
    card = (export["dir"] / "README.md").read_text(encoding="utf-8")
    meta = DatasetCard(card).data.to_dict()
    assert meta["license"] == "other" and meta["license_name"] == "mella-web-sources"
    assert meta["language"] == ["cs", "vi"]
    assert meta["size_categories"] == ["n<1K"]
    assert {"image-to-text", "visual-question-answering"} <= set(meta["task_categories"])
    assert [c["config_name"] for c in meta["configs"]] == ["default", "cs", "vi"]
    assert meta["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/*/train-*.parquet"},
        {"split": "test", "path": "data/*/test-*.parquet"},
    ]
    listed = {line.split("  ", 1)[1] for line in (export["dir"] / "SHA256SUMS").read_text().splitlines()}
    assert card_metadata_problems(card, listed) == []
    # the card's own text follows the front matter unchanged
    assert card.split("---\n", 2)[2].startswith("# MELLA dataset, export `v1`")


def test_a_licence_from_the_options_replaces_other(tmp_path):
    store = LakeStore(tmp_path)
    write_export(store, "exports/v1", build_records(store), "v1", ExportOptions(license="cc-by-4.0"))
    meta = DatasetCard((tmp_path / "exports/v1/README.md").read_text(encoding="utf-8")).data.to_dict()
    assert meta["license"] == "cc-by-4.0" and "license_name" not in meta


def test_parts_are_size_capped_listed_with_their_checksums_and_byte_identical_on_a_rerun(export):
    folder, store = export["dir"], export["store"]
    parts = sorted(p.relative_to(folder).as_posix() for p in folder.glob("data/*/*.parquet"))
    cs_train = [p for p in parts if p.startswith("data/cs/train-")]
    assert len(cs_train) > 1 and all(p.endswith(f"-of-{len(cs_train):05d}.parquet") for p in cs_train)
    sums = dict(reversed(line.split("  ", 1)) for line in (folder / "SHA256SUMS").read_text().splitlines())
    for part in parts:
        data = (folder / part).read_bytes()
        assert sums[part] == hashlib.sha256(data).hexdigest()
        assert pq.ParquetFile(folder / part).metadata.num_rows > 0
    # the same records again: the same bytes
    write_export(store, "exports/again", export["records"], "v1", ExportOptions(hf_shard_max_bytes=PART_BYTES))
    again = export["lake"] / "exports" / "again"
    assert all((again / p).read_bytes() == (folder / p).read_bytes() for p in parts)
    assert (again / "README.md").read_bytes() == (folder / "README.md").read_bytes()


def test_without_embedded_images_the_parts_hold_paths_relative_to_the_media_dir(tmp_path):
    store = LakeStore(tmp_path / "lake")
    records = build_records(store)
    write_export(store, "exports/v1", records, "v1", ExportOptions(hf_embed_images=False))
    folder = tmp_path / "lake" / "exports" / "v1"
    loaded = load(str(folder), cache=tmp_path / "cache")
    train = loaded["train"].cast_column("image", datasets.Image(decode=False))
    assert train.num_rows == int((records["split"] == "train").sum())
    for row in train:
        assert row["image"]["bytes"] is None
        assert Image.open(folder / row["image"]["path"]).size in SIZES.values()


def test_parts_are_planned_within_the_cap_and_an_oversized_row_gets_its_own():
    assert plan_shards([5, 5, 5, 20, 1], max_bytes=10) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert plan_shards([], max_bytes=10) == [(0, 0)]


@pytest.mark.parametrize(
    ("rows", "label"),
    [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (99_999, "10K<n<100K"), (2_500_000, "1M<n<10M")],
)
def test_size_category_uses_the_hubs_buckets(rows, label):
    assert size_category(rows) == label


def test_a_card_without_front_matter_or_with_a_pattern_matching_nothing_is_reported():
    assert card_metadata_problems("# A card\n", {"README.md"}) == ["the card has no YAML front matter"]
    assert card_metadata_problems("---\nlicense: [\n---\n# A card\n", {"README.md"}) == [
        "front matter: while parsing a flow node"
    ]
    card = (
        "---\nlicense: other\nlicense_name: x\nlanguage:\n- cs\ntask_categories:\n- image-to-text\n"
        "size_categories:\n- n<1K\npretty_name: x\ntags:\n- x\nconfigs:\n- config_name: default\n  data_files:\n"
        "  - split: train\n    path: data/*/train-*.parquet\n---\n# A card\n"
    )
    assert card_metadata_problems(card, {"README.md", "data/cs/train-00000-of-00001.parquet"}) == []
    assert card_metadata_problems(card, {"README.md"}) == [
        "config 'default' split 'train': no file matches 'data/*/train-*.parquet'"
    ]


# -- mella push -------------------------------------------------------------------------------------------------


def push(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["push", *argv])
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_push_dry_run_lists_every_manifest_file_and_uploads_nothing(export, capsys):
    folder = export["dir"]
    code, out, err = push(capsys, str(folder), "--repo-id", "mella-org/mella-demo", "--dry-run")
    assert code == 0, err
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    expected = sorted([f["path"] for f in manifest["files"]] + ["MANIFEST.json", "SHA256SUMS"])
    listed = [line.split()[-1] for line in out.splitlines()[1:-1]]
    assert listed == expected
    assert (
        out.splitlines()[0].startswith(f"{len(expected)} files, ") and "datasets/mella-org/mella-demo (public)" in out
    )
    assert out.splitlines()[-1] == "dry run: checks passed, nothing uploaded"


def test_push_refuses_a_file_that_changed_since_the_export(export, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(export["dir"], folder)
    part = sorted(folder.glob("data/vi/train-*.parquet"))[0]
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF  # same size, different bytes
    part.write_bytes(bytes(data))
    code, _out, err = push(capsys, str(folder), "--repo-id", "org/name", "--dry-run")
    name = part.relative_to(folder).as_posix()
    assert code == 1 and err == f"error: {name}: sha256 differs from MANIFEST.json\n"


def test_push_refuses_a_card_without_front_matter(export, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(export["dir"], folder)
    card = (folder / "README.md").read_text(encoding="utf-8").split("---\n", 2)[2].encode()
    (folder / "README.md").write_bytes(card)
    digest = hashlib.sha256(card).hexdigest()  # a consistent manifest, so only the card is wrong
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == "README.md":
            entry["bytes"], entry["sha256"] = len(card), digest
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))
    (folder / "SHA256SUMS").write_text("".join(f"{f['sha256']}  {f['path']}\n" for f in manifest["files"]))
    code, _out, err = push(capsys, str(folder), "--repo-id", "org/name", "--dry-run")
    assert code == 1 and err == "error: README.md: the card has no YAML front matter\n"


def test_push_without_a_token_fails_in_one_line_before_any_network_call(export, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    code, _out, err = push(capsys, str(export["dir"]), "--repo-id", "org/name")
    assert code == 1 and err.startswith("error: no Hugging Face token") and err.count("\n") == 1
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    code, _out, err = push(capsys, str(export["dir"]), "--repo-id", "org/name", "--private")
    assert code == 1 and err.startswith("error: HF_HUB_OFFLINE is set")


@pytest.mark.parametrize("repo_id", ["no-namespace", "org/bad--name", "org/name/extra"])
def test_push_with_a_malformed_repo_id_is_a_usage_error(export, capsys, repo_id):
    code, _out, err = push(capsys, str(export["dir"]), "--repo-id", repo_id, "--dry-run")
    assert code == 2 and "--repo-id" in err


def test_push_of_a_folder_that_is_not_an_export_fails(tmp_path, capsys):
    code, _out, err = push(capsys, str(tmp_path), "--repo-id", "org/name", "--dry-run")
    assert code == 1 and err == f"error: {tmp_path} is not an export folder: it has no MANIFEST.json\n"
