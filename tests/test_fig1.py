"""fig1: files written, claims JSON shape, and the claims at the default scale."""
import json

from eosflow import dln
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
    for c in doc["claims"]:
        assert {"name", "statistic", "value", "threshold", "holds"} <= set(c)


def test_missing_run_is_reported_not_raised():
    claims = fig1_claims(dln.simulate([0.001], steps=20))
    assert any(c.value is None and not c.holds for c in claims)


def test_claims_hold_at_default_scale():
    """At the default steps every claim holds (a failure here is a finding, not a threshold to tune)."""
    claims = fig1_claims(dln.simulate(LRS))
    assert len(claims) == 7
    failing = [c for c in claims if not c.holds]
    assert not failing, failing
