"""The registry of claims: every claim's name, statistic, threshold, test (kind), family and minimum
evidence, in one declarative file shipped with the package (``registry.yaml``), and the two calls the
figure modules make with it: :func:`claim` and :func:`family_claim`.

The registry is fixed before the runs it judges. Its ``hash`` (sha256 of its content as canonical
JSON) goes into every claims file; ``tests/test_claims_registry.py`` pins the hash of each
``version``, so a changed threshold without a new version fails the tests. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np
import yaml

from .decision import FAMILY_RULES, Decision, decide, decide_family, needed_for
from ..files import json_safe, write_json
from .procedures import ALPHA, KINDS, OPS, min_deciding_seeds
from .record import VERDICTS, Claim

__all__ = ["Registry", "REGISTRY", "load_registry", "claim", "family_claim", "write_claims"]


@dataclass(frozen=True)
class Registry:
    version: int
    hash: str
    claims: dict

    def __getitem__(self, claim_id: str) -> dict:
        try:
            return self.claims[claim_id]
        except KeyError:
            raise KeyError(f"claim {claim_id!r} is not in the registry (eosflow/claims/registry.yaml)") from None

    def param(self, claim_id: str, name: str):
        return self[claim_id].get("params", {})[name]


_REQUIRED = ("figures", "name", "statistic", "kind", "op", "bound", "minimum", "family")


def _check(data: dict) -> None:
    for cid, e in data["claims"].items():
        missing = [k for k in _REQUIRED if k not in e]
        if missing:
            raise ValueError(f"registry claim {cid}: missing {missing}")
        if e["kind"] not in KINDS or e["op"] not in OPS:
            raise ValueError(f"registry claim {cid}: kind {e['kind']!r} or op {e['op']!r} unknown")
        fam = e["family"]
        if fam is not None and fam.get("rule") not in FAMILY_RULES:
            raise ValueError(f"registry claim {cid}: family rule {fam!r} unknown; allowed: {list(FAMILY_RULES)}")


def load_registry(text: str | None = None) -> Registry:
    """The registry from ``text`` (default: the packaged ``registry.yaml``)."""
    if text is None:
        text = resources.files("eosflow.claims").joinpath("registry.yaml").read_text()
    data = yaml.safe_load(text)
    _check(data)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return Registry(int(data["version"]), hashlib.sha256(canonical.encode()).hexdigest(), data["claims"])


REGISTRY = load_registry()


def _threshold(e: dict) -> str:
    return f"{e['op']} {float(e['bound']):g}"


def _short(e: dict, evidence: dict) -> list[str]:
    return [f"{k} {evidence.get(k, 0)} < {need}" for k, need in e["minimum"].items() if evidence.get(k, 0) < need]


def _record(cid: str, e: dict, d: Decision, fmt: dict, note: str, evidence: dict, family=None) -> Claim:
    verdict, reason, needed, needed_note = d.verdict, d.reason, d.needed, d.needed_note
    short = _short(e, evidence)
    if short:
        verdict, reason = "undetermined", "too little evidence: " + ", ".join(short)
        floor = max(e["minimum"].values())
        if d.n == 0:  # no seed gives the statistic a value: more seeds of the same design need not either
            needed, needed_note = None, "no seed gives this statistic a value (see the note): more seeds do not help"
        elif needed is None and d.needed_note.startswith("more seeds do not help"):
            pass  # the effect is nil at its spread: still no count of seeds decides it
        else:
            needed = max(needed or 0, floor, min_deciding_seeds(e["kind"]))
            needed_note = needed_note or f"at least {needed} seeds"
    return Claim(id=cid, name=e["name"].format(**fmt), statistic=e["statistic"].format(**fmt), value=d.value,
                 threshold=_threshold(e), verdict=verdict, holds=verdict == "holds", kind=e["kind"],
                 procedure=d.procedure, interval=None if d.interval is None else list(d.interval),
                 interval_kind=d.interval_kind, p_holds=d.p_holds, p_fails=d.p_fails,
                 needed=needed if verdict == "undetermined" else None,
                 needed_note=needed_note if verdict == "undetermined" else "",
                 values=list(d.values), evidence=evidence, minimum=dict(e["minimum"]), family=family, note=note,
                 reason=reason if verdict == "undetermined" else "")


def _decide(e: dict, values, sizes, seeds) -> Decision:
    return decide(values, e["op"], float(e["bound"]), e["kind"], sizes=sizes, seeds=seeds)


def claim(claim_id: str, values, *, fmt: dict | None = None, note: str = "", evidence: dict | None = None,
          sizes=None) -> Claim:
    """The claim ``claim_id`` of the registry decided on ``values`` (per seed; per block with
    ``sizes`` for a rank claim). ``fmt`` fills the name's and statistic's fields; ``evidence``: the counts
    the claim had (default: ``{"seeds": number of finite values}``), checked against the registry's
    ``minimum``."""
    e = REGISTRY[claim_id]
    if e["family"] is not None:
        raise ValueError(f"claim {claim_id} is a family: use family_claim")
    d = _decide(e, values, sizes, (evidence or {}).get("seeds"))
    evidence = dict(evidence) if evidence is not None else {"seeds": d.n}
    return _record(claim_id, e, d, fmt or {}, note, evidence)


def family_claim(claim_id: str, options: dict, *, fmt: dict | None = None, note: str = "",
                 evidence: dict | None = None, sizes: dict | None = None) -> Claim:
    """A claim over options (``{option label: values}``), each option decided as :func:`claim` would,
    combined by the registry entry's family rule (:data:`eosflow.claims.decision.FAMILY_RULES`).

    The claim's ``p_holds`` and ``p_fails`` are the family's, corrected where the rule corrects ("some":
    m × the smallest option p toward holds, capped at 1; "every": m × the smallest toward fails), so
    each is compared with 2.5 % as it stands; its value is the deciding option's, with the interval at
    the level that decides it (1 - 2 alpha / m for "some"); ``family`` records every option as decided
    alone at 2.5 %. ``needed`` counts the seeds at which the options would decide at the corrected level."""
    e = REGISTRY[claim_id]
    if e["family"] is None:
        raise ValueError(f"claim {claim_id} is not a family: use claim")
    rule, seeds = e["family"]["rule"], (evidence or {}).get("seeds")
    per = {str(k): _decide(e, v, (sizes or {}).get(k), seeds) for k, v in options.items()}
    verdict, best, why = decide_family(per, rule)
    m = max(len(per), 1)
    d = per[best] if best is not None else decide([], e["op"], float(e["bound"]), e["kind"], sizes=[])
    if best is not None and rule == "some" and m > 1:  # the interval at the level the rule decides at
        d = decide(options[_key(options, best)], e["op"], float(e["bound"]), e["kind"],
                   sizes=(sizes or {}).get(_key(options, best)), seeds=seeds, alpha=ALPHA / m)
    if evidence is None:
        evidence = {"seeds": min((x.n for x in per.values()), default=0)}
    family = {"rule": rule, "over": e["family"]["over"], "correction": FAMILY_RULES[rule], "deciding": best,
              "why": why,
              "options": {k: {"value": x.value, "verdict": x.verdict, "p_holds": x.p_holds, "p_fails": x.p_fails,
                              "interval": None if x.interval is None else list(x.interval), "n": x.n}
                          for k, x in per.items()}}
    c = _record(claim_id, e, d, fmt or {}, note, evidence, family)
    c.p_holds, c.p_fails = _family_p(rule, per, m)
    if c.reason.startswith("too little evidence"):
        return c
    c.verdict, c.holds = verdict, verdict == "holds"
    c.reason = "" if verdict != "undetermined" else why + (f"; {d.reason}" if d.reason else "")
    c.needed, c.needed_note = (None, "") if verdict != "undetermined" else _family_needed(
        e, rule, per, options, sizes or {}, seeds)
    return c


def _key(options: dict, label: str):
    """The key of ``options`` whose label (``str(key)``) is ``label``."""
    return next(k for k in options if str(k) == label)


def _family_p(rule: str, per: dict, m: int) -> tuple[float | None, float | None]:
    ph = [d.p_holds for d in per.values() if d.p_holds is not None]
    pf = [d.p_fails for d in per.values() if d.p_fails is not None]
    if not ph or not pf:
        return None, None
    if rule == "some":
        return min(1.0, m * min(ph)), max(pf)
    return max(ph), min(1.0, m * min(pf))


def _family_needed(e: dict, rule: str, per: dict, options: dict, sizes: dict, seeds) -> tuple[int | None, str]:
    """Seeds that would decide an undetermined family. The side the family leans to by a corrected
    option decides it soonest: "some" holds when one option holds at alpha / m, "every" fails when one
    fails at alpha / m (the smallest count over the options leaning that way); otherwise every option
    must go the other way at alpha ("some" fails when all fail, "every" holds when all hold: the
    largest count, none when an option's effect is nil)."""
    m = max(len(per), 1)
    toward = "holds" if rule == "some" else "fails"

    def count(label, alpha):
        k = _key(options, label)
        v = np.asarray([np.nan if x is None else x for x in options[k]], dtype=float)
        return needed_for(e["kind"], v, float(e["bound"]), sizes.get(k), seeds or per[label].n, alpha,
                          op=e["op"])[0]

    open_ = {k: d for k, d in per.items()  # an option without values (no p-values) leans nowhere
             if d.verdict == "undetermined" and d.p_holds is not None and d.p_fails is not None}
    leaning = [k for k, d in open_.items() if (d.p_holds < d.p_fails if toward == "holds" else d.p_fails < d.p_holds)]
    if leaning:
        counts = {k: n for k in leaning if (n := count(k, ALPHA / m)) is not None}
        if counts:
            k = min(counts, key=counts.get)
            return counts[k], (f"{counts[k]} seeds decide option {k} at 2.5 %/{m} (the family's correction), "
                               "which decides the family, with 80% power at its observed effect and spread")
    rest = [k for k, d in per.items() if d.verdict != ("fails" if toward == "holds" else "holds")]
    counts = {k: count(k, ALPHA) for k in rest}
    nil = [k for k, n in counts.items() if n is None]
    if nil or not counts:
        return None, f"more seeds do not help: option {nil[0] if nil else '?'}'s effect is nil at its spread"
    k = max(counts, key=counts.get)
    return counts[k], (f"{counts[k]} seeds decide every option (the slowest: {k}) with 80% power at its "
                       "observed effect and spread")


def write_claims(claims: list[Claim], path, figure: str, **extra) -> None:
    """Write ``{"figure", "registry", "claims", "all_hold", "verdicts", "families", **extra}`` atomically:
    ``registry`` is the registry's version and hash, ``verdicts`` counts the claims of each verdict,
    ``families`` lists the claims decided over options with their rule."""
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    rows = [asdict(c) for c in claims]
    for r in rows:  # a sign test counts infinite values (a diverged run's side): kept as "inf" / "-inf"
        r["values"] = [v if math.isfinite(v) else ("inf" if v > 0 else "-inf") for v in r["values"]]
    families = {c.name: {"rule": c.family["rule"], "correction": c.family["correction"],
                         "options": list(c.family["options"])} for c in claims if c.family}
    write_json(json_safe({"figure": figure, "registry": {"version": REGISTRY.version, "hash": REGISTRY.hash},
                      "claims": rows, "all_hold": all(c.holds for c in claims),
                      "verdicts": counts, "families": families, **extra}), path)
