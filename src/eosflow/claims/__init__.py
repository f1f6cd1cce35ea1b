"""Claims: every expected effect of a figure as a statistic against a threshold, decided over seeds by a
procedure whose false-``holds`` rate is known.

- :func:`decide` (:mod:`.decision`): per-seed values in, a :class:`Decision` (``verdict``, ``interval``,
  ``needed``) out. The one entry every figure uses, and one for a user's own numbers.
- :mod:`.procedures`: the tests behind it (sign-flip, sign test, stratified permutation), their
  intervals and power.
- :mod:`.registry`: every claim's statistic, threshold, test, family and minimum evidence, in the
  packaged ``registry.yaml``; :func:`claim` and :func:`family_claim` decide a registry claim.
- :mod:`.record`: the :class:`Claim` written to a figure's claims file (:func:`write_claims`, in
  :mod:`.registry`, which stamps the file with its version and hash).
- :mod:`.calibration`: false-``holds`` rates under null distributions, and the power table.

No torch here.
"""

from .decision import Decision, decide, decide_family
from .procedures import ALPHA
from .record import VERDICTS, Claim
from .registry import REGISTRY, claim, family_claim, write_claims

__all__ = ["ALPHA", "VERDICTS", "Decision", "decide", "decide_family", "Claim", "write_claims", "REGISTRY", "claim",
           "family_claim"]
