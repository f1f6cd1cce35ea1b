"""Claims: the verdict rules (holds, fails, undetermined), the bootstrap interval, and the claims
JSON against the schema the package ships."""
import json

import jsonschema
import numpy as np
import pytest

from eosflow.claims import bootstrap_interval, check, write_claims
from eosflow.config import load_schema

SCHEMA = load_schema(name="claims")


def test_verdict_rules():
    three = {"evidence": {"seeds": 3}, "minimum": {"seeds": 3}}
    assert check("a", "s", -0.5, "<", 0).verdict == "holds"  # a deterministic value decides
    assert check("a", "s", 0.5, "<", 0).verdict == "fails"
    assert check("a", "s", -0.5, "<", 0, interval=(-0.7, -0.2), **three).verdict == "holds"
    assert check("a", "s", 0.5, "<", 0, interval=(0.2, 0.7), **three).verdict == "fails"
    straddle = check("a", "s", -0.1, "<", 0, interval=(-0.3, 0.1), **three)
    assert straddle.verdict == "undetermined" and "contains the threshold" in straddle.reason
    short = check("a", "s", -0.5, "<", 0, interval=(-0.7, -0.2), evidence={"seeds": 2}, minimum={"seeds": 3})
    assert short.verdict == "undetermined" and short.reason == "too little evidence: seeds 2 < 3"
    assert not short.holds and short.value == -0.5  # the value is still reported
    none = check("a", "s", None, ">", 0, note="no run above the limit")
    assert none.verdict == "undetermined" and none.value is None
    assert check("a", "s", float("nan"), ">", 0).verdict == "undetermined"
    with pytest.raises(ValueError):
        check("a", "s", 1.0, "~", 0)


def test_bootstrap_interval_covers_a_known_mean():
    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 0.1, 400)
    lo, hi = bootstrap_interval(x)
    assert lo < 0.3 < hi and hi - lo < 0.05  # ±1.96 · 0.1/√400 ≈ ±0.0098
    assert bootstrap_interval(x) == (lo, hi)  # seeded
    assert bootstrap_interval([1.0, 2.0]) is None and bootstrap_interval([1.0, np.nan, 2.0]) is None
    lo, hi = bootstrap_interval([1.0, 2.0, 3.0], np.median)
    assert 1.0 <= lo <= hi <= 3.0


def test_written_claims_follow_the_schema(tmp_path):
    claims = [check("S_max falls", "Spearman(e, S_max)", -0.9, "<", 0, interval=(-1, -0.8),
                    evidence={"seeds": 3}, minimum={"seeds": 3}),
              check("n", "count", None, ">=", 3), check("edge", "median", 1.35, "<=", 1.2)]
    write_claims(claims, tmp_path / "c.json", "ext/eos", runs=[{"lr": 0.1}])
    data = json.loads((tmp_path / "c.json").read_text())
    jsonschema.validate(data, SCHEMA)
    assert [c["verdict"] for c in data["claims"]] == ["holds", "undetermined", "fails"]
    assert [c["holds"] for c in data["claims"]] == [True, False, False] and data["all_hold"] is False
    assert data["verdicts"] == {"holds": 1, "fails": 1, "undetermined": 1}
    assert data["claims"][0]["threshold"] == "< 0" and data["claims"][1]["value"] is None
    assert data["claims"][0]["interval"] == [-1.0, -0.8] and data["claims"][0]["evidence"] == {"seeds": 3}


GOOD = {"name": "x", "statistic": "y", "value": -1.0, "threshold": "< 0", "verdict": "holds", "holds": True,
        "note": "", "reason": "", "interval": None, "evidence": {}, "minimum": {}}


@pytest.mark.parametrize("broken", [
    {"figure": "figure 4"},
    {"claims": []},
    {"claims": [{**GOOD, "threshold": "about 0"}]},
    {"claims": [{**GOOD, "value": "big"}]},
    {"claims": [{**GOOD, "holds": "yes"}]},
    {"claims": [{**GOOD, "verdict": "maybe"}]},
    {"claims": [{**GOOD, "verdict": "fails"}]},                     # holds must follow the verdict
    {"claims": [{**GOOD, "verdict": "undetermined", "holds": False}]},  # without a reason
    {"claims": [{**GOOD, "interval": [0.1]}]},
    {"verdicts": {"holds": 1}},
])
def test_the_schema_rejects_malformed_claims(broken):
    good = {"figure": "fig4", "all_hold": True, "verdicts": {"holds": 1, "fails": 0, "undetermined": 0},
            "claims": [GOOD]}
    jsonschema.validate(good, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, **broken}, SCHEMA)
