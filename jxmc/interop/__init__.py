"""Other toolkits' model formats read into, and written from, jxmc's models.

* :mod:`jxmc.interop.pecos`: PECOS's XR-Linear models <-> ``--method xr-linear``
  (``jxmc convert --from pecos`` / ``--to pecos``); the folder itself
  (``XLinearModel.save`` / ``load``) in :mod:`jxmc.interop.pecos_folder`.
"""
