"""A seeded synthetic XMC generator: the built-in default dataset.

What it plants, so that every family of jxmc has something to find:

* **power-law label frequencies**: label popularity ``p_l ∝ (rank_l + 1)^-a``
  (Zipf exponent ``zipf_a``), ranks a random permutation of the labels;
* **hierarchical label clusters**: labels sit in the leaves of a planted tree
  with ``branching`` children per level; a point's labels are drawn mostly
  from one leaf cluster (``co_cluster`` is the chance that each further label
  comes from the first label's cluster), so labels co-occur by cluster;
* **sparse features that carry signal**: every label, and every cluster at
  every level, owns ``words_per_label`` feature ids; each of a point's
  ``words_per_point`` word draws picks one of its labels and then a word from
  that label's own words, its leaf cluster's or its top cluster's (by
  ``mix``), or a background word (Zipf over all features) with chance
  ``noise``.  Values are ``1 + log(count)``, rows L2-normalised.

Everything is vectorised numpy, so sizes go from toy to millions of labels
(memory ``O(L * words_per_label + n * words_per_point)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from jxmc.errors import ConfigError


@dataclass(frozen=True)
class SyntheticConfig:
    n_train: int = 6000  # training points
    n_test: int = 2000  # test points
    n_labels: int = 1000  # L
    n_features: int = 5000  # d
    branching: tuple[int, ...] = (8, 8)  # planted cluster tree: children per level
    zipf_a: float = 1.0  # label popularity exponent
    labels_per_point: float = 3.0  # mean labels per point (>= 1)
    co_cluster: float = 0.7  # chance a further label comes from the first label's leaf cluster
    words_per_label: int = 12  # feature ids owned by each label and each cluster
    words_per_point: int = 40  # word draws per point
    mix: tuple[float, float, float] = (0.6, 0.25, 0.15)  # own label / leaf cluster / top cluster
    noise: float = 0.3  # chance a word draw is background noise
    seed: int = 0


def parse_spec(spec: str) -> SyntheticConfig:
    """``"synthetic"`` or ``"synthetic:n_labels=100000,n_train=50000"`` to a config.

    Raises:
      ConfigError: an unknown key or a value of the wrong type.
    """
    _, _, rest = spec.partition(":")
    config = SyntheticConfig()
    if not rest:
        return config
    updates = {}
    fields = {f.name: f for f in dataclasses.fields(SyntheticConfig)}
    for item in rest.split(","):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in fields:
            raise ConfigError(f"--data synthetic: unknown option {item!r}; known: {', '.join(fields)}")
        default = getattr(config, key)
        try:
            if isinstance(default, tuple):
                elem = type(default[0])
                value = tuple(elem(v) for v in raw.split("/"))
            else:
                value = type(default)(raw)
        except ValueError:
            raise ConfigError(f"--data synthetic: cannot read {key}={raw!r}") from None
        updates[key] = value
    return dataclasses.replace(config, **updates)


def _zipf_probs(n: int, a: float, rng: np.random.Generator) -> np.ndarray:
    p = (np.arange(n) + 1.0) ** -a
    p /= p.sum()
    return p[rng.permutation(n)]


def generate(config: SyntheticConfig = SyntheticConfig()):
    """Generates ``(X_train, Y_train, X_test, Y_test)``.

    Returns:
      ``X``: ``csr_matrix`` f32[n, d] (rows L2-normalised, every row non-empty);
      ``Y``: ``csr_matrix`` f32[n, L] (every point has at least one label).

    Raises:
      ConfigError: inconsistent sizes (e.g. fewer labels than leaf clusters).
    """
    c = config
    n_leaf = int(np.prod(c.branching))
    if c.n_labels < n_leaf:
        raise ConfigError(f"--data synthetic: n_labels={c.n_labels} is below the {n_leaf} leaf "
                          f"clusters of branching={'/'.join(map(str, c.branching))}")
    if c.labels_per_point < 1:
        raise ConfigError("--data synthetic: labels_per_point must be >= 1")
    rng = np.random.default_rng(c.seed)
    L, d, w = c.n_labels, c.n_features, c.words_per_label
    # planted tree: leaf cluster of each label, contiguous after sorting
    leaf_of = rng.permutation(np.arange(L) % n_leaf)
    by_leaf = np.argsort(leaf_of, kind="stable")
    leaf_start = np.searchsorted(leaf_of[by_leaf], np.arange(n_leaf + 1))
    top_of_leaf = np.arange(n_leaf) // (n_leaf // c.branching[0])
    popularity = _zipf_probs(L, c.zipf_a, rng)
    label_words = rng.integers(0, d, (L, w), dtype=np.int64)
    leaf_words = rng.integers(0, d, (n_leaf, w), dtype=np.int64)
    top_words = rng.integers(0, d, (c.branching[0], w), dtype=np.int64)
    background = _zipf_probs(d, 1.0, rng)
    n_total = c.n_train + c.n_test

    # labels: 1 + Poisson(mean - 1), capped; first by popularity, then mostly cluster mates
    r = np.minimum(1 + rng.poisson(c.labels_per_point - 1, n_total), 4 * int(np.ceil(c.labels_per_point)) + 4)
    rmax = int(r.max())
    first = rng.choice(L, size=n_total, p=popularity)
    glob = rng.choice(L, size=(n_total, rmax), p=popularity)
    leaf = leaf_of[first]
    size = leaf_start[leaf + 1] - leaf_start[leaf]
    mate = by_leaf[leaf_start[leaf][:, None] + (rng.random((n_total, rmax)) * size[:, None]).astype(np.int64)]
    others = np.where(rng.random((n_total, rmax)) < c.co_cluster, mate, glob)
    labels = np.concatenate([first[:, None], others[:, : rmax - 1]], axis=1)
    used = np.arange(rmax)[None, :] < r[:, None]
    rows = np.repeat(np.arange(n_total), used.sum(1))
    Y = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, labels[used])), shape=(n_total, L))
    Y.data[:] = 1.0  # duplicates were summed

    # words: pick one of the point's labels, then a source
    wpp = c.words_per_point
    pick = (rng.random((n_total, wpp)) * r[:, None]).astype(np.int64)
    lab = labels[np.arange(n_total)[:, None], pick]
    src = rng.choice(3, size=(n_total, wpp), p=np.asarray(c.mix) / np.sum(c.mix))
    slot = rng.integers(0, w, (n_total, wpp))
    lf = leaf_of[lab]
    word = np.where(src == 0, label_words[lab, slot],
                    np.where(src == 1, leaf_words[lf, slot], top_words[top_of_leaf[lf], slot]))
    noisy = rng.random((n_total, wpp)) < c.noise
    word = np.where(noisy, rng.choice(d, size=(n_total, wpp), p=background), word)
    X = sp.csr_matrix((np.ones(word.size, np.float32), (np.repeat(np.arange(n_total), wpp), word.ravel())),
                      shape=(n_total, d))
    X.sum_duplicates()
    X.data = 1.0 + np.log(X.data)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(1)).ravel())
    X = sp.csr_matrix(sp.diags(1.0 / norms) @ X, dtype=np.float32)
    X.sort_indices()
    Y.sort_indices()
    tr, te = slice(0, c.n_train), slice(c.n_train, n_total)
    return X[tr], Y[tr], X[te], Y[te]
