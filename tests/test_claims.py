"""The claims JSON written beside every figure follows workflow/schemas/claims.schema.yaml."""
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from eosflow.figures.common import check, write_claims

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/claims.schema.yaml").read_text())


def test_written_claims_follow_the_schema(tmp_path):
    claims = [check("S_max falls", "Spearman(e, S_max)", -0.9, "<", 0), check("n", "count", None, ">=", 3),
              check("edge", "median", 1.05, "<=", 1.2)]
    write_claims(claims, tmp_path / "c.json", "ext/eos", runs=[{"lr": 0.1}])
    data = json.loads((tmp_path / "c.json").read_text())
    jsonschema.validate(data, SCHEMA)
    assert [c["holds"] for c in data["claims"]] == [True, False, True] and data["all_hold"] is False
    assert data["claims"][0]["threshold"] == "< 0" and data["claims"][1]["value"] is None


@pytest.mark.parametrize("broken", [
    {"figure": "figure 4"},
    {"claims": []},
    {"claims": [{"name": "x", "statistic": "y", "value": 1.0, "threshold": "about 0", "holds": True, "note": ""}]},
    {"claims": [{"name": "x", "statistic": "y", "value": "big", "threshold": "< 0", "holds": True, "note": ""}]},
    {"claims": [{"name": "x", "statistic": "y", "value": 1.0, "threshold": "< 0", "holds": "yes", "note": ""}]},
])
def test_the_schema_rejects_malformed_claims(broken):
    good = {"figure": "fig4", "all_hold": True, "claims": [
        {"name": "x", "statistic": "y", "value": -1.0, "threshold": "< 0", "holds": True, "note": ""}]}
    jsonschema.validate(good, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, **broken}, SCHEMA)
