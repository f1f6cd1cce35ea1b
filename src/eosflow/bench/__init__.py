"""Benchmark of the spectral engine: ``python -m eosflow bench [--quick] [--memory] [--out DIR]``.

Not part of the runtime package's import path: nothing in :mod:`eosflow` imports it; only the
``bench`` command does (modules: ``workloads``, ``references`` (the solvers compared against),
``measure``, ``runner``, ``steps``, ``targets``, ``memory``, ``cli``).

In one process, on the same model, data and tolerance (relative residual ``‖Hv − λv‖/|λ| ≤ tol``),
it times the top-k Hessian eigenpairs by

* ``scipy_eigsh`` (a): ``scipy.sparse.linalg.eigsh(which="LA")`` (ARPACK) over a
  ``LinearOperator`` whose matvec is a double-backward HVP (``torch.autograd.grad`` twice through
  the model's own parameters), with the vector copied numpy → torch → numpy at every product;
* ``hessian_eigenthings`` (b): ``hessian_eigenthings.lanczos`` (PyPI ``hessian-eigenthings``
  1.0.0a5, ``which="LA"``, full reorthogonalisation) over its ``HessianOperator``. It runs a
  fixed number of Lanczos steps; the bench finds the smallest number that meets ``tol`` (checked
  with fresh HVPs) before timing it, which favours it;
* ``eosflow`` (c): :func:`eosflow.spectral.top_eigenpairs` from a cold start, the default engine,
  and ``eosflow_lanczos``, the single-vector engine (``method="lanczos"``), for reference;
* ``tracking`` (d): :class:`eosflow.spectral.SpectrumTracker` warm-started along a GD trajectory
  above the stability limit (η = ``lr_factor`` · 2/S(θ₀)), eigenpairs every step, with (a) run at
  a few of the same steps for comparison.

Two rows time whole GD steps (module ``steps``), the step the pipeline takes
(:class:`eosflow.training.steppers.ObjectiveStepper`):

* ``clamp``: GD at the same η with the stability clamp as a clamped training run applies it
  (:class:`eosflow.jobs.run.InloopSharpness` to ``clamp_tol`` every step, η_t by
  :meth:`eosflow.training.state.RunState.clamped_lr`), against a plain GD step from the same θ_t;
  at a few steps S is recomputed to 1e-6 (float64) to check η_t·S ≤ 2·clamp;
* ``gd_vs_torch``: the GD step against a loop written with nothing but torch over the same chunks.

The workloads (module ``workloads``) are the 199k MLP on Fashion-MNIST and a small BatchNorm VGG
on CIFAR-10: real images from ``--cifar10-dir`` or the config's ``data.cifar10_dir``, else
synthetic CIFAR-shaped ones (``info.data`` says which). Eosflow rows record the Hessian-vector
product the engine used (``product``). The report ends with ``targets`` (module ``targets``): the
issue's targets as measured ratios, met or not, and the eigenvalue and residual checks.

Every method's eigenpairs are checked afterwards with fresh HVPs (explicit residuals) and their
eigenvalues compared. Times are medians over repetitions (``time.perf_counter``, with
``torch.cuda.synchronize`` on a GPU); peak memory is the process's peak RSS during the call
(Linux ``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs`` before each call),
and ``torch.cuda.max_memory_allocated`` on a GPU. Writes ``bench.json`` (``bench_quick.json`` with
``--quick``) under ``--out`` and prints a table.

``--memory``: full-batch gradient and one HVP of the small VGG over 50,000 CIFAR-shaped images
(synthetic), chunked, each in its own subprocess so that its peak RSS is its own.
"""
