"""The optimizer of the transformer methods: AdamW, warm-up then linear decay,
separate learning rates for the encoder and the heads, global-norm clipping.

As in BERT fine-tuning (Devlin et al., NAACL 2019, Appendix A.3) and LightXML /
CascadeXML (encoder ~1e-5..1e-4, classifiers ~1e-3..1e-2).  Biases and
LayerNorm scales (1-d parameters) get no weight decay.
"""

from __future__ import annotations

import jax
import optax


def warmup_linear(peak: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """0 -> ``peak`` over ``warmup_steps``, then linearly to 0 at ``total_steps``."""
    warmup_steps = max(1, min(warmup_steps, total_steps))
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup_steps),
         optax.linear_schedule(peak, 0.0, max(1, total_steps - warmup_steps))],
        [warmup_steps])


def make_optimizer(*, lr_encoder: float, lr_heads: float, total_steps: int,
                   warmup_steps: int = 0, weight_decay: float = 0.01,
                   clip_norm: float | None = 1.0,
                   frozen_heads: tuple[str, ...] = ()) -> optax.GradientTransformation:
    """AdamW over ``{"encoder": ..., "heads": {"level_1": ..., ...}}`` params (any
    other top-level key is treated as a head).

    Args:
      lr_encoder, lr_heads: peak learning rates of the encoder and of the heads.
      total_steps, warmup_steps: the schedule (:func:`warmup_linear`).
      weight_decay: AdamW's decoupled decay, on matrices only.
      clip_norm: the global gradient norm is clipped to this; None: no clipping (the
        sparse step, :func:`jxmc.train.sparse_step.make_sparse_train_step`, clips the norm
        of all its gradients, dense and row ones, itself).
      frozen_heads: names under ``params["heads"]`` left unchanged (no update,
        no decay), e.g. XR-Transformer's coarser levels while a finer one trains.

    Raises:
      ValueError: ``total_steps < 1``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")

    def decay_mask(p):
        return jax.tree_util.tree_map(lambda a: a.ndim > 1, p)

    def adamw(lr):
        return optax.adamw(warmup_linear(lr, total_steps, warmup_steps),
                           weight_decay=weight_decay, mask=decay_mask)

    def fill(tree, label):
        return jax.tree_util.tree_map(lambda _: label, tree)

    def labels(p):
        out = {}
        for key, sub in p.items():
            if key == "heads" and isinstance(sub, dict):
                out[key] = {name: fill(t, "frozen" if name in frozen_heads else "heads")
                            for name, t in sub.items()}
            else:
                out[key] = fill(sub, "encoder" if key == "encoder" else "heads")
        return out

    clip = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
    return optax.chain(*clip,
                       optax.multi_transform({"encoder": adamw(lr_encoder),
                                              "heads": adamw(lr_heads),
                                              "frozen": optax.set_to_zero()}, labels))
