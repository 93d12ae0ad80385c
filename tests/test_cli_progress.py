"""`mella extract` and `mella crawl` show a progress bar when stderr is a terminal (a real pseudo-terminal here),
and nothing but their own lines when it is a pipe or a file."""

from __future__ import annotations

from mella_assets.demo.corpus import warc_bytes
from support.scripted_site import Route, ScriptedSite
from support.terminal import mella


def test_extract_shows_a_bar_over_the_warc_files_on_a_terminal_only(tmp_path):
    paths = []
    for n in range(3):
        page = f'<html lang="cs"><body><img src="/{n}.jpg" alt="Pražský hrad {n}"></body></html>'
        path = tmp_path / f"{n}.warc.gz"
        path.write_bytes(warc_bytes([(f"https://www.example.cz/{n}", page, [])]))
        paths.append(str(path))
    code, shown = mella(["extract", *paths, "--output", str(tmp_path / "a.parquet")], terminal=True)
    assert code == 0, shown
    assert "WARC files:" in shown and "0/3 [" in shown, shown  # the bar, cleared at the end
    code, piped = mella(["extract", *paths, "--output", str(tmp_path / "b.parquet")], terminal=False)
    assert code == 0, piped
    assert "WARC files" not in piped and "\r" not in piped
    assert piped.strip().splitlines()[-1].startswith("3 candidates from 3 pages")


def test_crawl_shows_a_bar_over_the_pages_fetched_on_a_terminal_only(tmp_path):
    links = "".join(f'<a href="/p{n}">x</a>' for n in range(4))
    routes = {
        "/robots.txt": Route(b"User-agent: *\nAllow: /\n", content_type="text/plain"),
        "/": Route(f'<html lang="cs"><body>{links}</body></html>'.encode()),
        **{f"/p{n}": Route(b'<html lang="cs"><body>strana</body></html>') for n in range(4)},
    }
    with ScriptedSite(routes) as site:
        arguments = ["crawl", "--language", "cs", "--seed", f"{site.base_url}/", "--max-depth", "1", "--delay", "0",
                     "--allow-network", "127.0.0.1/32"]  # fmt: skip
        code, shown = mella([*arguments, "--lake", str(tmp_path / "a")], terminal=True)
        assert code == 0, shown
        assert "pages fetched:" in shown and "/100 [" in shown, shown
        code, piped = mella([*arguments, "--lake", str(tmp_path / "b")], terminal=False)
    assert code == 0, piped
    assert "pages fetched" not in piped and "\r" not in piped
