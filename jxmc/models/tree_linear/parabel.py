"""``--method parabel``: Parabel's partitioned label trees, on XR-Linear's machinery.

Prabhu, Kag, Harsola, Agrawal & Varma, "Parabel: Partitioned Label Trees for
Extreme Classification with Application to Dynamic Search Advertising", WWW
2018, Section 3:

* the label tree: a *balanced binary* tree by recursive balanced spherical
  2-means on the labels' PIFA embeddings, split until leaves hold at most 100
  labels (``nr_splits = 2, max_leaf_size = 100``: every internal level of
  :func:`jxmc.tree.build.build` has 2 children, e.g. ``(2, 80)`` on
  Bibtex and ``(2, 2, 2, 2, 62)`` on Delicious);
* per-node linear classifiers: at an internal node one classifier per child,
  at a leaf one per label, each an L2-regularised squared-hinge SVM (``cost = 1``,
  bias 1, weights below 0.1 dropped) trained on the instances that reach the
  node's parent -- exactly XR-Linear's TFN rankers
  (:func:`jxmc.models.tree_linear.rankers.train_level`);
* probabilistic label tree scoring: a label's probability is the product of the
  probabilities of the nodes on its path, with beam search of width 10.
  For a squared-hinge classifier with score ``v`` that probability is
  ``exp(-max(0, 1 - v)^2)`` (as in Omikuji, a reimplementation of Parabel that
  matches its published precision: ``src/model/liblinear.rs``);
  ``transform="l2-hinge"`` does that.
  jxmc's default is PECOS's ``"l3-hinge"``, ``exp(-max(0, 1 - v)^3)``, the
  transform of jxmc's xr-linear, so that the tree methods share one scoring:
  with 3 trees it scored P@1 63.66 against 63.42 on Bibtex and 66.50 against
  66.59 on Delicious (experiments/results/disentanglement.md; differences of
  that size are within the run-to-run spread of the dual-CD solver);
* an ensemble of ``n_trees`` trees from different seeds, label probabilities
  averaged (:mod:`jxmc.models.tree_linear.ensemble`); Parabel's published figures use
  3 trees, as does the default here.

``--clusters-per-label`` (label disentanglement) applies per tree.
"""

from __future__ import annotations

from dataclasses import dataclass

from jxmc.models.tree_linear import xr_linear as xr
from jxmc.models.tree_linear.ensemble import ensemble_method


@dataclass(frozen=True)
class Config(xr.Config):
    """XR-Linear's options with Parabel's defaults, plus ``n_trees``."""

    nr_splits: int = 2  # binary tree (Parabel)
    max_leaf_size: int = 100  # labels per leaf at most (Parabel 100)
    transform: str = "l3-hinge"  # PECOS's cube; "l2-hinge" is Parabel's own (see above)
    n_trees: int = 3  # trees averaged (Parabel 3)


METHOD, fit, predict = ensemble_method(
    "parabel", Config,
    summary="Parabel: balanced binary label trees, squared-hinge node classifiers, "
            "probabilistic beam search, 3 trees averaged (Prabhu et al. 2018)")
