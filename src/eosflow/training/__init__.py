"""Full-batch gradient descent: one training loop for one run or K runs at once.

- :mod:`~eosflow.training.state`: :class:`TrainConfig`, :class:`TrainResult` and
  :class:`RunState`, the per-run rules (status, cadences, checkpoint content, metrics);
- :mod:`~eosflow.training.loop`: the loop (:func:`run_loop`: checkpoint, resume, SIGTERM,
  progress) and its two drivers, :func:`train` and :func:`train_group`;
- :mod:`~eosflow.training.steppers`: how a step is computed (one run, or K runs ``vmap``ped);
- :mod:`~eosflow.training.optimizers`: the optimizer of a run (GD, minibatch SGD, Adam, RMSprop,
  Clipped-Ada) and its stability threshold;
- :mod:`~eosflow.training.schedules`: learning-rate schedules.
"""

from .loop import StopRequest, fingerprint, run_loop, train, train_group
from .optimizers import OPTIMIZERS, Optimizer, epoch_order, make_optimizer, stability_threshold
from .schedules import lr_at
from .state import METRICS, RunState, TrainConfig, TrainResult
from .steppers import BatchedStepper, ObjectiveStepper

__all__ = ["METRICS", "TrainConfig", "TrainResult", "RunState", "StopRequest", "fingerprint", "run_loop", "train",
           "train_group", "ObjectiveStepper", "BatchedStepper", "OPTIMIZERS", "Optimizer", "make_optimizer",
           "epoch_order", "stability_threshold", "lr_at"]
