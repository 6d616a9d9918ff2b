"""Training of the transformer methods: optimizer (:mod:`.optim`), train state and
the jitted step (:mod:`.step`), the epoch loop with checkpoints and resume
(:mod:`.loop`), fixed-shape batches (:mod:`.data`) and what the methods share
(:mod:`.text_model`)."""

from jxmc.train.loop import restore_state, run_epochs, save_state
from jxmc.train.optim import make_optimizer, warmup_linear
from jxmc.train.step import TrainState, init_state, make_train_step

__all__ = ["TrainState", "init_state", "make_optimizer", "make_train_step", "restore_state",
           "run_epochs", "save_state", "warmup_linear"]
