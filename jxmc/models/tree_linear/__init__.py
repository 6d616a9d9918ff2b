"""The tree + linear rankers family: a label tree (:mod:`jxmc.tree.build`) with sparse
one-vs-rest squared-hinge rankers at every level, searched by beam.

* :mod:`.xr_linear` -- ``--method xr-linear`` (PECOS's XR-Linear, Yu et al. JMLR 2022);
* :mod:`.parabel`, :mod:`.bonsai` -- ensembles of such trees (:mod:`.ensemble`) with
  Parabel's binary and Bonsai's wide shapes;
* :mod:`.rankers` -- one level's rankers (dual CD or truncated Newton);
* :mod:`.scoring` -- the beam search on one device; :mod:`.mesh` -- on a device mesh
  (bit-identical).
"""
