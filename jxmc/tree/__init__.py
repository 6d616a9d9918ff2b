"""Label trees: balanced k-means (:mod:`.kmeans`), the tree as a permutation plus
branching factors (:mod:`.label_tree`), beam search (:mod:`.beam`) and training
shortlists (:mod:`.shortlist`)."""

from jxmc.tree.beam import beam_search, l3_hinge_log
from jxmc.tree.kmeans import build_tree
from jxmc.tree.label_tree import LabelTree, check_tree, label_positions
from jxmc.tree.shortlist import pair_targets, positive_nodes, training_pairs

__all__ = ["LabelTree", "beam_search", "build_tree", "check_tree", "l3_hinge_log",
           "label_positions", "pair_targets", "positive_nodes", "training_pairs"]
