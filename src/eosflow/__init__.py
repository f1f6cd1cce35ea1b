"""eosflow: full-batch gradient descent, Hessian spectra through instabilities, and the figures
of Wang & Roberts (arXiv 2412.17613)."""

__version__ = "0.1.0"
