"""Which Latin-script sr / hr / bs strings of the language-ID set are spelled validly in each standard, by the
standards' own Hunspell dictionaries (an outside judge of the Serbian row in ``bench_langid.py``).

Needs the ``hunspell`` program and Debian's ``hunspell-sr hunspell-hr hunspell-bs`` (LibreOffice dictionaries);
not part of ``make bench``::

    apt-get install hunspell hunspell-sr hunspell-hr hunspell-bs
    python -m benchmarks.spelling_ambiguity [DICTIONARY_DIR]

A string is *valid in* a standard when the dictionary knows every word of it; a capitalised word none of the three
dictionaries knows (a name such as ``Mostaru``) is left out. The Serbian dictionary admits ijekavian forms
(ijekavian is standard Serbian too, in Bosnia and Herzegovina and Montenegro), so it accepts most Croatian and
Bosnian sentences: what separates them is where they were written, not how.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from benchmarks.bench_langid import _is_cyrillic, load_set

DICTIONARIES = {"sr": "sr_Latn_RS", "hr": "hr_HR", "bs": "bs_BA"}
WORD = re.compile(r"\w+")


def unknown_words(dictionary: Path, words: list[str]) -> set[str]:
    result = subprocess.run(
        ["hunspell", "-d", str(dictionary), "-l"], input="\n".join(words), capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def validity(folder: Path) -> list[tuple[str, str, dict[str, bool]]]:
    """(label, text, {standard: valid}) per Latin-script sr / hr / bs string of the set."""
    rows = [(label, text) for label, text in load_set() if label in DICTIONARIES and not _is_cyrillic(text)]
    words = sorted({word for _, text in rows for word in WORD.findall(text)})
    unknown = {code: unknown_words(folder / name, words) for code, name in DICTIONARIES.items()}
    names = set.intersection(*unknown.values())
    out = []
    for label, text in rows:
        checked = [word for word in WORD.findall(text) if not (word in names and word[0].isupper())]
        out.append((label, text, {code: not any(w in unknown[code] for w in checked) for code in DICTIONARIES}))
    return out


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path("/usr/share/hunspell")
    rows = validity(folder)
    print("label\tvalid_sr\tvalid_hr\tvalid_bs\ttext")
    for label, text, valid in rows:
        print(f"{label}\t" + "\t".join(str(int(valid[c])) for c in DICTIONARIES) + f"\t{text}")
    for label in DICTIONARIES:
        mine = [valid for lab, _, valid in rows if lab == label]
        counts = ", ".join(f"valid {code}: {sum(v[code] for v in mine)}" for code in DICTIONARIES)
        print(f"# {label}: {len(mine)} strings; {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
