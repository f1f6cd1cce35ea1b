"""fig1: files written, claims JSON shape, and the claims (registry fig1.*) at the default scale."""
import json

import pytest

from eosflow import dln
from eosflow.claims import REGISTRY
from eosflow.figures.fig1 import fig1_claims, make_fig1

LRS = [0.001, 0.0095, 0.011, 0.013]


def test_make_fig1_writes_files(tmp_path):
    ds = dln.simulate(LRS, steps=300)
    out = {k: tmp_path / f"fig1.{k}" for k in ("pdf", "png")}
    claims = tmp_path / "fig1.claims.json"
    make_fig1(ds, out["pdf"], out["png"], claims)
    assert out["pdf"].read_bytes().startswith(b"%PDF")
    assert out["png"].read_bytes().startswith(b"\x89PNG")
    doc = json.loads(claims.read_text())
    assert doc["figure"] == "fig1" and doc["claims"]
    assert doc["registry"] == {"version": REGISTRY.version, "hash": REGISTRY.hash}
    for c in doc["claims"]:
        assert {"id", "name", "statistic", "value", "threshold", "holds", "kind"} <= set(c)
        assert c["kind"] == "exact" and c["id"].startswith("fig1.")


def test_missing_run_is_reported_not_raised():
    claims = fig1_claims(dln.simulate([0.001], steps=20))
    missing = [c for c in claims if c.value is None]
    assert missing and all(c.verdict == "undetermined" and c.reason.startswith("too little evidence")
                           for c in missing)
    assert {c.note for c in missing if c.id != "fig1.limit"} == {"run missing from the cube"}


def test_claims_hold_at_default_scale():
    """At the default steps every claim holds (a failure here is a finding, not a threshold to tune)."""
    claims = fig1_claims(dln.simulate(LRS))
    assert len(claims) == 7
    assert [c.id for c in claims] == ["fig1.limit"] + ["fig1.ends_stable", "fig1.balances"] * 2 + \
        ["fig1.barely_moves"] * 2
    failing = [c for c in claims if not c.holds]
    assert not failing, failing
    assert claims[1].name == "eta=0.011: ends below the stability limit, S_final < 2/eta"
    assert claims[5].name == "eta=0.001: barely moves"


def test_thresholds_are_the_registrys():
    """Each claim is decided against its registry entry's bound, by its one value."""
    claims = fig1_claims(dln.simulate(LRS))
    for c in claims:
        e = REGISTRY[c.id]
        assert c.threshold == f"{e['op']} {float(e['bound']):g}"
        assert c.values == [pytest.approx(c.value)]
        assert c.minimum == e["minimum"]
    assert {c.threshold for c in claims if c.id == "fig1.balances"} == {"< 0.9"}
    assert {c.threshold for c in claims if c.id == "fig1.barely_moves"} == {"< 0.05"}


def test_too_short_runs_fail_the_unstable_claims():
    """Two GD steps: the runs above eta_eos have neither come back below 2/eta nor balanced, and
    the exact claims say fails (a value decides), while the first step's limit still holds."""
    verdicts = {(c.id, c.name): c.verdict for c in fig1_claims(dln.simulate(LRS, steps=2))}
    assert [v for (cid, _), v in verdicts.items() if cid in ("fig1.ends_stable", "fig1.balances")] == ["fails"] * 4
    assert [v for (cid, _), v in verdicts.items() if cid in ("fig1.limit", "fig1.barely_moves")] == ["holds"] * 3
