"""What each compute rule does, one module per job kind (the workflow's scripts only unpack paths):

- :mod:`~eosflow.jobs.spec`: :class:`~eosflow.jobs.spec.RunSpec`, what one run is, built once from
  the config and the wildcards and recorded in its cube (no torch: the workflow builds it);
- :mod:`~eosflow.jobs.run`: what every job does with a run: its objective, its η₀ placed by the
  stability limit, its training configuration and in-loop sharpness, its files;
- :mod:`~eosflow.jobs.train`: the train and train_group rules; :mod:`~eosflow.jobs.branches`: fig2's
  branch runs, forked from their parent; :mod:`~eosflow.jobs.hessian`: the hessian rule;
  :mod:`~eosflow.jobs.slices`: the fig3 and fig12 slices; :mod:`~eosflow.jobs.optimizers`: the
  optimizer runs.

This face imports nothing, so that ``eosflow.jobs.spec`` loads without torch.
"""
