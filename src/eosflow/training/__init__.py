"""Full-batch gradient descent: one training loop for one run or K runs at once.

- :mod:`~eosflow.training.state`: :class:`TrainConfig`, :class:`TrainResult` and
  :class:`RunState`, the per-run rules (status, cadences, checkpoint content, metrics);
- :mod:`~eosflow.training.loop`: the loop (:func:`run_loop`: checkpoint, resume, SIGTERM,
  progress) and its two drivers, :func:`train` and :func:`train_group`;
- :mod:`~eosflow.training.steppers`: how a step is computed (one run, or K runs ``vmap``ped);
- :mod:`~eosflow.training.schedules`: learning-rate schedules and their path names.
"""

from .loop import StopRequest, fingerprint, run_loop, train, train_group
from .schedules import lr_at, schedule_from_tag, schedule_tag
from .state import METRICS, RunState, TrainConfig, TrainResult
from .steppers import BatchedStepper, ObjectiveStepper

__all__ = ["METRICS", "TrainConfig", "TrainResult", "RunState", "StopRequest", "fingerprint", "run_loop", "train",
           "train_group", "ObjectiveStepper", "BatchedStepper", "lr_at", "schedule_tag", "schedule_from_tag"]
