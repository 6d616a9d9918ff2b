"""``--method bonsai``: Bonsai's shallow, wide label trees, on XR-Linear's machinery.

Khandagale, Xiao & Babbar, "Bonsai: diverse and shallow trees for extreme
multi-label classification", Machine Learning 109, 2020, Section 3: instead of
Parabel's deep binary tree, every internal node has ``K = 100`` children and
the tree is at most 3 levels deep, so that far fewer decisions are made on the
way to a label (less error propagation) at the cost of wider nodes.  The
classifiers and the scoring are Parabel's (:mod:`jxmc.models.tree_linear.parabel`):
squared-hinge SVMs at every node, path probabilities, beam search, an ensemble
of ``n_trees`` trees averaged.

Shape: ``t`` internal levels of 100 children, the fewest (``t <= max_depth - 1``)
that leave at most ``max_leaf_size = 100`` labels per leaf cluster
(:func:`jxmc.tree.kmeans.wide_branching`): ``(100, 2)`` on Bibtex, ``(100, 10)``
on Delicious, ``(100, 100, 6)`` on 50,694 labels.

Difference from Bonsai: Bonsai clusters with *unconstrained* k-means, so its
children have any size; jxmc keeps the tree complete and balanced
(:func:`jxmc.tree.kmeans.build_wide_tree`, recursive balanced 2-means with
per-part label counts), which is what its static-shape beam search and
index-arithmetic children need.
"""

from __future__ import annotations

from dataclasses import dataclass

from jxmc.models.tree_linear import xr_linear as xr
from jxmc.models.tree_linear.ensemble import ensemble_method


@dataclass(frozen=True)
class Config(xr.Config):
    """XR-Linear's options with Bonsai's defaults, plus ``n_trees``."""

    tree_shape: str = "wide"  # levels of nr_splits children (Bonsai)
    nr_splits: int = 100  # children per internal node (Bonsai K = 100)
    max_depth: int = 3  # levels at most, the label level included
    max_leaf_size: int = 100  # a node with more labels is split again
    transform: str = "l3-hinge"  # as jxmc's parabel ("l2-hinge": Parabel's and Bonsai's code)
    n_trees: int = 3  # trees averaged (Bonsai 3)


METHOD, fit, predict = ensemble_method(
    "bonsai", Config,
    summary="Bonsai: shallow wide label trees (100 children, depth <= 3), squared-hinge "
            "node classifiers, 3 trees averaged (Khandagale et al. 2020)")
