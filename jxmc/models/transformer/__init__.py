"""The transformer-heads family: a text encoder fine-tuned with one label table per
level of a label tree (:mod:`jxmc.nn.cascade`), trained by one fit skeleton
(:mod:`.common`).  The methods state their network, heads and phases only:
:mod:`.cascadexml` (CascadeXML), :mod:`.lightxml` (LightXML) and
:mod:`.xr_transformer` (XR-Transformer, whose final rankers are XR-Linear)."""
