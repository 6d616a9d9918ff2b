"""The label-embedding family: a rank-``r`` linear map from features to label scores.

``scores(x) = (x^T W + b) V^T + mu`` with ``W: f32[d, r]``, ``V: f32[L, r]``; the
methods differ in how they choose ``V`` and ``W``.

* :mod:`~jxmc.models.embedding.core`: the shared problem on device (``X1 = [X,
  bias]``, ``Z = Y - 1 mu^T`` never formed), its products, the saved parameters,
  ``prepare`` and the decoding ``predict``.
* :mod:`~jxmc.models.embedding.ridge`: the ridge regression ``X1 -> Z V`` (Cholesky
  or conjugate gradients).
* :mod:`~jxmc.models.embedding.bases`: the label bases of PLST (SVD of ``Z``) and
  CPLST (eigenvectors of ``Z^T H Z``), exact or randomised.
* :mod:`~jxmc.models.embedding.plst`, :mod:`~jxmc.models.embedding.cplst`,
  :mod:`~jxmc.models.embedding.leml`: the ``--method`` modules.
"""
