"""Serbian vs Croatian / Bosnian in Latin script: word-level evidence from the yat reflex and standard doublets.

Detectors cannot tell Latin-script Serbian from Croatian or Bosnian (lingua's Serbian model is Cyrillic-only; the
three standards share grammar and most words). Two differences are systematic and visible in short texts:

- The yat reflex: standard Serbian (Serbia) is ekavian (``mleko, reka, lep, dete, pesma, mesto, posle``), Croatian
  and Bosnian are ijekavian (``mlijeko, rijeka, lijep, dijete, pjesma, mjesto, poslije``).
- Standard doublets: Serbian ``hleb, istorija, opština, kuvati, sveštenik`` vs Croatian ``kruh, povijest, općina,
  kuhati, svećenik``; Croatian-only words (``tisuća, nogomet, kazalište, vlak, tjedan, otok`` and the Slavic month
  names) and Bosnian-only ones (``kahva, lahko, historija``).

Words shared by Serbian and Bosnian but not Croatian (``hiljada, fudbal, pozorište``) do not separate Serbian from
Bosnian, so they are not counted. Homographs are left out on purpose: ``svet`` is "holy" in all three standards,
``leti`` is "flies", ``reče`` is "said", ``dijeta`` is "diet", ``svećenik`` is Croatian. Ijekavian Serbian (Republika
Srpska, Montenegro) reads as Croatian / Bosnian here: the pipeline's page-language prior is what admits it.
"""

from __future__ import annotations

import re


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Whole words (lower case) and word beginnings that only standard (ekavian) Serbian uses.
SERBIAN_WORDS = _word_set(
    """
    deca dece deci decom decu dete deteta detetu detetom mleko mleka mleku mlekom reka reke reku rekom rekama
    reč reči rečima lep lepa lepo lepe lepi lepu lepog lepom lepoj lepih lepim vreme cvet cveta cvetu cvetom beo
    bela belo beli bele belog belom beloj belu belih belim mesto mesta mestu mestom mestima sneg snega snegu snegom
    leto posle pre gde ovde onde negde svugde uvek vetar vetra deo delovi delova delove videti videla videli hteo
    htela hteli hteti sedi sede sedeti telo tela telu telom mera mere meru cena cene cenu cenom koren korena zver
    levo leva levi levu levoj levom lek leka lekovi cev cevi sveća sveće sveću svećom pesak peska pesku
    hleb hleba hlebom hlebu opšte uopšte srećan srećna srećno srećni kuva kuvaju
    """
)
SERBIAN_PREFIXES = (
    "dečak",
    "dečj",
    "dečij",
    "detinj",
    "devojk",
    "devojč",
    "mlečn",
    "rečn",
    "lepot",
    "lepš",
    "cveć",
    "cvetn",
    "cvetov",
    "pesm",
    "pesnik",
    "peva",
    "pevač",
    "snež",
    "letnj",
    "letovanj",
    "proleć",
    "vetrov",
    "pobed",
    "sever",
    "mesec",
    "meseč",
    "merenj",
    "cenovn",
    "seća",
    "sećanj",
    "vredn",
    "zvezd",
    "slep",
    "lekar",
    "lekov",
    "senk",
    "peščan",
    "večn",
    "podel",
    "nasled",
    "sledeć",
    "promen",
    "menja",
    "vežb",
    "svetl",
    "osvetl",
    "nedelj",
    "istorij",
    "opštin",
    "opšti",
    "kuvan",
    "kuvar",
    "kuvat",
    "sveštenik",
    "bezbedn",
    "izveštaj",
)

# Whole words and word beginnings that standard Serbian does not use: ijekavian forms, Croatian-only and
# Bosnian-only words.
NOT_SERBIAN_WORDS = _word_set(
    """
    prije poslije gdje ovdje ondje negdje svugdje uvijek dio dijete djeteta djetetu lijep lijepa lijepo lijepe
    lijepi lijepu lijepog lijepom lijepoj lijepih lijepim vrijeme snijeg snijega snijegu snijegom cijena cijene
    cijenu tko kruh kruha kruhom zrak grah kava kavu kave juha juhu tisuća tisuće tisuću siječanj siječnja veljača
    veljače ožujak ožujka travanj travnja travnju svibanj svibnja lipanj lipnja srpanj srpnja rujan rujna listopad
    listopada prosinac prosinca sretan sretna sretno sretni uopće kuha kuhaju točka točke točku točkom
    """
)
NOT_SERBIAN_PREFIXES = (
    # ijekavian yat reflexes
    "mlijek",
    "mliječ",
    "rijek",
    "riječ",
    "rječ",
    "djec",
    "dječ",
    "djetinj",
    "djevoj",
    "djed",
    "cvijet",
    "cvjet",
    "cvijeć",
    "cvjeć",
    "pjesm",
    "pjesnik",
    "pjeva",
    "pjevač",
    "bijel",
    "bjel",
    "mjest",
    "svijet",
    "snježn",
    "ljeto",
    "ljeti",
    "ljetn",
    "ljetov",
    "proljeć",
    "vjetar",
    "vjetr",
    "pobjed",
    "sjever",
    "sjedi",
    "sjede",
    "tijel",
    "mjesec",
    "mjeseč",
    "mjer",
    "vijest",
    "vidje",
    "htje",
    "sjeća",
    "sjećanj",
    "vrijedn",
    "zvijezd",
    "zvjezd",
    "slijep",
    "lijev",
    "lijek",
    "liječ",
    "sjenk",
    "pijesak",
    "pijesk",
    "pješčan",
    "vječn",
    "cijev",
    "korijen",
    "zvijer",
    "dijel",
    "podjel",
    "nasljed",
    "sljedeć",
    "promjen",
    "mijenja",
    "vježb",
    "svjetl",
    "osvijetl",
    "nedjelj",
    "svijeć",
    "željez",
    "hljeb",
    # Croatian-only words
    "tisuć",
    "povijes",
    "općin",
    "opć",
    "kuhan",
    "kuhar",
    "kuhat",
    "krumpir",
    "svećenik",
    "nogomet",
    "kazališt",
    "sveučilišt",
    "zrakoplov",
    "zračn",
    "tjedan",
    "tjedn",
    "tvornic",
    "glazb",
    "znanost",
    "kemij",
    "otok",
    "otoc",
    "tržnic",
    "obitelj",
    "mrkv",
    "rajčic",
    "točn",
    "palač",
    "uvjet",
    "sudionik",
    "momčad",
    "računal",
    "veleposlan",
    "žlic",
    "tanjur",
    "vrhnj",
    "kavan",
    "odgojitelj",
    "izvješć",
    # Bosnian-only words
    "kahv",
    "lahk",
    "mehk",
    "historij",
)

# Prepositions that Serbo-Croatian lacks (it has ``u``, ``s``/``sa``, ``iz``) but Slovene, Slovak, Czech and
# Polish use in nearly every sentence: a text with one of them is not Serbian whatever a detector says.
NOT_SERBO_CROATIAN_WORDS = frozenset({"v", "z", "w"})

_WORD = re.compile(r"[^\W\d_]+")


def latin_words(text: str) -> list[str]:
    """The lower-cased letter runs of ``text``."""
    return _WORD.findall(text.lower())


def serbian_evidence(text: str) -> int:
    """Words marking ``text`` as standard Serbian minus words marking it as Croatian / Bosnian (ijekavian or
    not used in Serbian): > 0 Serbian, < 0 Croatian or Bosnian, 0 when the words do not tell."""
    score = 0
    for word in latin_words(text):
        if word in SERBIAN_WORDS or word.startswith(SERBIAN_PREFIXES):
            score += 1
        elif word in NOT_SERBIAN_WORDS or word.startswith(NOT_SERBIAN_PREFIXES):
            score -= 1
    return score


def has_non_serbo_croatian_words(text: str) -> bool:
    """Whether ``text`` has a preposition Serbian, Croatian and Bosnian lack (``v``, ``z``, ``w``)."""
    return any(word in NOT_SERBO_CROATIAN_WORDS for word in latin_words(text))
