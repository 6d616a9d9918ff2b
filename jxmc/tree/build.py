"""The one place a label tree's shape is chosen, for every family.

A :class:`TreeSpec` names the shape; :func:`build` makes the tree over label
embeddings (PIFA, or any ``csr f32[L, d]``).  XR-Linear, Parabel, Bonsai and the
transformer heads all build their trees here.

* ``kind="balanced"``: hierarchical balanced 2-means, the bisections grouped
  ``log2(nr_splits)`` at a time into levels of ``nr_splits`` children, leaves of
  at most ``max_leaf_size`` labels (PECOS XR-Linear, Yu et al. 2022 §3.1;
  Parabel's tree is the same with ``nr_splits=2``).
* ``kind="wide"``: Bonsai's shallow trees, levels of ``nr_splits`` children (e.g.
  100), at most ``max_depth`` levels with the label level (Khandagale et al.
  2020, §3).
* ``levels > 0``: the top levels merged so that there are at most ``levels``
  (the transformer heads' resolutions; CascadeXML, Kharbanda et al. 2022, §3.1).
"""

from __future__ import annotations

from typing import NamedTuple

import scipy.sparse as sp

from jxmc.errors import ConfigError
from jxmc.tree.kmeans import balanced_branching, build_tree, build_wide_tree, wide_branching
from jxmc.tree.label_tree import LabelTree, merge_top_levels, merged_branching

KINDS = ("balanced", "wide")


class TreeSpec(NamedTuple):
    kind: str = "balanced"  # "balanced" (PECOS / Parabel) or "wide" (Bonsai)
    nr_splits: int = 16  # children per internal level (a power of two for "balanced")
    max_leaf_size: int = 100  # labels per leaf cluster at most
    max_depth: int = 3  # "wide": levels at most, the label level included
    kmeans_iters: int = 10  # 2-means iterations per bisection
    levels: int = 0  # > 0: top levels merged to at most this many levels


def check_spec(spec: TreeSpec) -> None:
    """Raises ConfigError (naming the option) for a shape that cannot be built."""
    if spec.kind not in KINDS:
        raise ConfigError(f"tree_shape must be one of {', '.join(KINDS)}, got {spec.kind!r}")
    if spec.max_leaf_size < 1:
        raise ConfigError(f"max_leaf_size must be >= 1, got {spec.max_leaf_size}")
    n = spec.nr_splits
    if spec.kind == "wide" and (n < 2 or spec.max_depth < 2):
        raise ConfigError(f"a wide tree needs nr_splits >= 2 and max_depth >= 2, got "
                          f"{n} and {spec.max_depth}")
    if spec.kind == "balanced" and (n < 2 or n & (n - 1)):
        raise ConfigError(f"nr_splits must be a power of two >= 2, got {n}")
    if spec.levels < 0:
        raise ConfigError(f"levels must be >= 0, got {spec.levels}")


def _clustered(spec: TreeSpec, n_labels: int) -> tuple[int, ...]:
    """The branching factors the clustering makes (before any merge of top levels)."""
    if spec.kind == "wide":
        return wide_branching(n_labels, branching=spec.nr_splits,
                              max_leaf_size=spec.max_leaf_size, max_depth=spec.max_depth)
    return balanced_branching(n_labels, max_leaf_size=spec.max_leaf_size,
                              nr_splits=spec.nr_splits)


def branching(n_labels: int, spec: TreeSpec) -> tuple[int, ...]:
    """``(B_1, ..., B_D)``: the branching factors of :func:`build`'s tree over ``n_labels``
    labels, without clustering (the last is the leaf size, padding included).

    Raises:
      ConfigError: an invalid ``spec`` (:func:`check_spec`).
    """
    check_spec(spec)
    shape = _clustered(spec, n_labels)
    return merged_branching(shape, spec.levels) if spec.levels else shape


def build(emb: sp.csr_matrix, spec: TreeSpec, seed: int = 0) -> LabelTree:
    """The label tree over the rows of ``emb`` (``csr f32[L, d]``) in the shape ``spec``;
    its branching factors are :func:`branching`'s.

    Raises:
      ConfigError: an invalid ``spec`` (:func:`check_spec`).
      ValueError: fewer than 2 labels.
    """
    check_spec(spec)
    if spec.kind == "wide":
        tree = build_wide_tree(emb, _clustered(spec, emb.shape[0]), iters=spec.kmeans_iters,
                               seed=seed)
    else:
        tree = build_tree(emb, max_leaf_size=spec.max_leaf_size, nr_splits=spec.nr_splits,
                          iters=spec.kmeans_iters, seed=seed)
    return merge_top_levels(tree, spec.levels) if spec.levels else tree
