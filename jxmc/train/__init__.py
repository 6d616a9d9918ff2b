"""Generic training pieces: optimizer (:mod:`.optim`), train state and the jitted
step (:mod:`.step`), the epoch loop with checkpoints and resume (:mod:`.loop`) and
fixed-shape batches (:mod:`.batches`).  The transformer methods' phased training is
:mod:`jxmc.models.transformer.common`."""

from jxmc.train.batches import batches
from jxmc.train.loop import restore_state, run_epochs, save_state
from jxmc.train.optim import make_optimizer, warmup_linear
from jxmc.train.step import TrainState, init_state, make_train_step

__all__ = ["TrainState", "batches", "init_state", "make_optimizer", "make_train_step",
           "restore_state", "run_epochs", "save_state", "warmup_linear"]
