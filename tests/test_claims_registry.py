"""The claims registry: one declarative file whose content is pinned per version (a changed threshold
without a new version fails here), every entry used by a figure, and no figure deciding outside it."""
import re
from pathlib import Path

import pytest

from eosflow.claims import REGISTRY
from eosflow.claims.registry import load_registry

SRC = Path(__file__).resolve().parents[1] / "src" / "eosflow"
#: version -> sha256 of the registry's content (canonical JSON). A new version adds its line; an old
#: line never changes.
KNOWN = {
    2: "5cc12d53569d90ce31ae15de0d8900d2a1697794216929ed465190e6799f6abf",
    3: "6d559e23b64771f2354b5b60cc9680c7190286d9929aa328b90ace8047ae1f29",
    4: "45afbc87caeb182cfd6cea302cc02a452ae7190b75a89b980200b0eb7c236a99",
    5: "ea4d65fffb302357801c502f7663a1f348524b4d8d4e683f32b3a948fea9a7a6",
    6: "e48ed4a4c867bbad0836393b47940be68a5804dc05c9669c4696e144ef391133",
}


def test_the_registry_content_is_pinned_to_its_version():
    assert REGISTRY.version in KNOWN, f"registry version {REGISTRY.version} has no pinned hash in this test"
    assert KNOWN[REGISTRY.version] == REGISTRY.hash, (
        "the claims registry changed without a new version: bump `version` in "
        "src/eosflow/claims/registry.yaml and pin the new hash here")


def test_a_changed_threshold_changes_the_hash():
    text = (SRC / "claims" / "registry.yaml").read_text()
    changed = text.replace("    bound: 0.8\n", "    bound: 0.75\n", 1)
    assert changed != text
    assert load_registry(changed).hash != REGISTRY.hash
    # comments do not count: the hash is of the content
    assert load_registry(text + "\n# a comment\n").hash == REGISTRY.hash


@pytest.mark.parametrize("broken, message", [
    ("    kind: paired\n", "kind"),
    ("    family: {rule: every, over: eta0}\n", "family rule"),
])
def test_a_malformed_entry_is_refused(broken, message):
    text = (SRC / "claims" / "registry.yaml").read_text()
    bad = text.replace(broken, broken.replace("paired", "bootstrap").replace("every", "most"), 1)
    with pytest.raises(ValueError, match=message):
        load_registry(bad)


def test_every_entry_is_used_and_no_figure_decides_outside_the_registry():
    figures = "\n".join(p.read_text() for p in sorted((SRC / "figures").glob("*.py")))
    unused = [cid for cid in REGISTRY.claims if f'"{cid}"' not in figures]
    assert not unused, f"registry claims no figure decides: {unused}"
    # the figures decide through claim()/family_claim() only: no threshold of their own
    assert not re.search(r"\bcheck\(|bootstrap_interval|MIN_SEEDS", figures)
