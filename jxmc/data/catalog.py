"""The public data sets of the Extreme Classification Repository, and their names.

:data:`XC_DATASETS` lists, per set, the sizes the repository publishes (the TFDS
builder warns when the files differ) and the files of its "BoW Features"
download; :func:`config_name` turns any spelling of a set's name (``"EURLex-4K"``,
``"eurlex4k"``) into its key, and :func:`download_hint` says where its files
come from.  Every set comes from http://manikvarma.org/downloads/XC/XMLRepository.html
(Bhatia et al., 2016), table "Multi-label Datasets"; the raw text of the large
ones is distributed by AttentionXML (https://github.com/yourh/AttentionXML).

This module imports nothing of TFDS: the builders (:mod:`jxmc.data.tfds_builders`)
and the readers (:mod:`jxmc.data.tfds`) both read it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from jxmc.errors import ConfigError

__all__ = ["TEXT_URL", "XC_DATASETS", "XC_URL", "XcDataset", "config_name", "download_hint"]

XC_URL = "http://manikvarma.org/downloads/XC/XMLRepository.html"
#: Raw text of EURLex-4K, Wiki10-31K, AmazonCat-13K, Wiki-500K, Amazon-670K and Amazon-3M.
TEXT_URL = "https://github.com/yourh/AttentionXML"


class XcDataset(NamedTuple):
    """A data set of the Extreme Classification Repository, as its page lists it.

    Attributes:
      title: the name on the page.
      n_features, n_labels, n_train, n_test: ``d``, ``L`` and the split sizes.
      files: the files of the "BoW Features" download (any recognised layout works).
      summary: what the points and labels are.
    """

    title: str
    n_features: int
    n_labels: int
    n_train: int
    n_test: int
    files: str
    summary: str


#: The XC-repository sets with a predefined ``xc_repository`` config (sizes from
#: http://manikvarma.org/downloads/XC/XMLRepository.html).
XC_DATASETS: dict[str, XcDataset] = {
    "bibtex": XcDataset("Bibtex", 1836, 159, 4880, 2515,
                        "Bibtex_data.txt, bibtex_trSplit.txt, bibtex_tstSplit.txt",
                        "BibTeX entries -> tags (Katakis et al., ECML/PKDD 2008 challenge)"),
    "delicious": XcDataset("Delicious", 500, 983, 12920, 3185,
                           "Delicious_data.txt, delicious_trSplit.txt, delicious_tstSplit.txt",
                           "web pages -> del.icio.us tags (Tsoumakas et al., 2008)"),
    "mediamill": XcDataset("Mediamill", 120, 101, 30993, 12914,
                           "Mediamill_data.txt, mediamill_trSplit.txt, mediamill_tstSplit.txt",
                           "video frames -> semantic concepts (Snoek et al., ACM MM 2006)"),
    "eurlex_4k": XcDataset("EURLex-4K", 5000, 3993, 15539, 3809,
                           "eurlex_train.txt, eurlex_test.txt",
                           "EU legal documents -> EUROVOC descriptors (Loza Mencia et al., 2008)"),
    "wiki10_31k": XcDataset("Wiki10-31K", 101938, 30938, 14146, 6616,
                            "wiki10_train.txt, wiki10_test.txt",
                            "Wikipedia articles -> del.icio.us tags (Zubiaga, 2009)"),
    "amazoncat_13k": XcDataset("AmazonCat-13K", 203882, 13330, 1186239, 306782,
                               "amazonCat_train.txt, amazonCat_test.txt",
                               "Amazon product descriptions -> categories (McAuley et al., 2013)"),
    "wiki_500k": XcDataset("Wiki-500K", 2381304, 501070, 1779881, 769421,
                           "WikipediaLarge-500K_train.txt, WikipediaLarge-500K_test.txt",
                           "Wikipedia articles -> Wikipedia categories"),
    "amazon_670k": XcDataset("Amazon-670K", 135909, 670091, 490449, 153025,
                             "amazon_train.txt, amazon_test.txt",
                             "Amazon product reviews -> co-purchased items (McAuley et al., 2013)"),
    "amazon_3m": XcDataset("Amazon-3M", 337067, 2812281, 1717899, 742507,
                           "amazon-3M_train.txt, amazon-3M_test.txt",
                           "Amazon product descriptions -> co-viewed/co-purchased items "
                           "(McAuley et al., 2015)"),
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def config_name(name: str) -> str:
    """The TFDS config name of a data set name.

    XC-repository names match :data:`XC_DATASETS` ignoring case and punctuation
    (``"EURLex-4K"``, ``"eurlex4k"`` -> ``"eurlex_4k"``; ``"WikipediaLarge-500K"``
    -> ``"wiki_500k"``); other names are lower-cased with ``-``, ``.`` and spaces
    turned into ``_``.

    Raises:
      ConfigError: an empty name, or characters other than letters, digits, ``_``.
    """
    aliases = {_norm(k): k for k in XC_DATASETS}
    aliases |= {_norm(v.title): k for k, v in XC_DATASETS.items()}
    aliases[_norm("WikipediaLarge-500K")] = "wiki_500k"
    if _norm(name) in aliases:
        return aliases[_norm(name)]
    out = re.sub(r"[-. ]", "_", name.strip().lower())
    if not re.fullmatch(r"[a-z0-9_]+", out):
        raise ConfigError(f"data set name {name!r}: use letters, digits, '-', '_' only")
    return out


def download_hint(name: str, kind: str = "xc") -> str:
    """One line saying where the source files of ``name`` come from.

    ``name`` is any data set name (:func:`config_name`); an XC-repository set is
    named with its title and the files of its download, other names get the
    general instructions of their ``kind`` (``"xc"`` or ``"text"``).
    """
    key = config_name(name)
    if kind == "text":
        return (f"a raw-text folder ({{train,test}}_texts.txt, {{train,test}}_labels.txt); the XC "
                f"sets' raw text is linked from {TEXT_URL} (\"Datasets\")")
    info = XC_DATASETS.get(key)
    if info is None:
        return f"a folder in an XC layout (e.g. train.txt + test.txt); sets from {XC_URL}"
    return (f"{info.title}: the \"BoW Features\" download of {XC_URL}, unpacked "
            f"({info.files})")
