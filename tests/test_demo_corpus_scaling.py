"""The demo corpus scaled for benchmarks: k copies of every page, each with new URLs and new pictures."""

from mella_assets.demo.corpus import build_demo_site, load_corpus, scaled_pages

BASE_URL = "http://127.0.0.1:9"


def test_one_copy_is_the_hand_written_corpus():
    pages = load_corpus("cs")["pages"]
    assert scaled_pages(pages, 1) == pages


def test_copies_have_new_page_urls_and_new_picture_names_with_the_same_texts():
    pages = load_corpus("cs")["pages"]
    scaled = scaled_pages(pages, 3)
    assert len(scaled) == 3 * len(pages)
    assert len({page["url"] for page in scaled}) == len(scaled)
    names = [image["name"] for page in scaled for image in page["images"]]
    assert len(set(names)) == len({image["name"] for page in pages for image in page["images"]}) * 3
    copy = scaled[len(pages)]
    assert copy["url"].split("/")[3] == "copy-1"
    assert copy["paragraphs"] == pages[0]["paragraphs"]


def test_a_scaled_site_serves_distinct_image_files_for_every_copy(tmp_path):
    single = build_demo_site(tmp_path / "one", BASE_URL, ["cs"])
    double = build_demo_site(tmp_path / "two", BASE_URL, ["cs"], copies=2)
    assert len(double.pages["cs"]) == 2 * len(single.pages["cs"])
    assert len(double.content_images("cs")) == 2 * len(single.content_images("cs"))
    files_one = {p.name for p in (tmp_path / "one" / "cs" / "img").iterdir()}
    files_two = {p.name for p in (tmp_path / "two" / "cs" / "img").iterdir()}
    assert files_one < files_two
    # the copy's pictures are other pictures, not the same bytes under a new name
    first = single.content_images("cs")[0].file.rsplit("/", 1)[1]
    stem, ext = first.rsplit(".", 1)
    copy = tmp_path / "two" / "cs" / "img" / f"{stem}-c1.{ext}"
    assert copy.read_bytes() != (tmp_path / "one" / "cs" / "img" / first).read_bytes()
