"""fig4's S_max statistic and claims; the edge-of-stability check's statistic and claims."""
import json

import numpy as np
import pytest
import xarray as xr

from eosflow.figures.eos import make_eos, second_half_ratio
from eosflow.figures.fig4 import make_fig4, s_max_after


def cube(lr, hsteps, sharp, n_steps=None, status="max_epochs", eta_eos=0.1, seed=0):
    n = n_steps if n_steps is not None else int(hsteps[-1])
    return xr.Dataset({"sharpness": ("hstep", np.asarray(sharp, float)),
                       "test_acc": ("step", np.linspace(0.5, 0.8, n + 1))},
                      coords={"hstep": np.asarray(hsteps), "step": np.arange(n + 1), "lr": lr, "seed": seed},
                      attrs={"status": status, "eta_eos": eta_eos})


def test_s_max_after_the_switch():
    c = cube(0.2, [0, 10, 20, 30], [50.0, 9.0, 20.0, np.nan])
    # strictly after the switch: the switch point is the large-eta phase's last iterate
    assert s_max_after(c, 0) == 20.0 and s_max_after(c, 9) == 20.0 and np.isnan(s_max_after(c, 20))
    c = cube(0.2, [0, 10, 20, 30], [5.0, 90.0, 20.0, 30.0])
    assert s_max_after(c, 10) == 30.0 and s_max_after(c, 9) == 90.0


def fig4_runs(flattening: bool, seeds=(0, 1, 2)):
    runs = []
    for seed in seeds:
        for lr0 in (0.1, 0.2):
            for e in (0, 50, 100):
                peak = 100.0 / (1 + (e / 50) * (lr0 / 0.1)) if flattening else 10.0 + e * lr0
                peak *= 1 + 0.05 * seed
                runs.append({"lr0": lr0, "epoch": e, "seed": seed, "cube": cube(0.01, [0, 50, 100, 150, 200],
                                                                                 [5, peak / 2, peak, peak * 0.9, peak])})
    return runs


@pytest.mark.parametrize("flattening", [True, False])
def test_fig4_claims(tmp_path, flattening):
    claims = make_fig4(fig4_runs(flattening), 0.01, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    assert [c.verdict for c in claims] == [("holds" if flattening else "fails")] * 2
    assert all(c.evidence == {"seeds": 3} and c.interval is not None for c in claims)
    data = json.loads((tmp_path / "c.json").read_text())
    assert len(data["runs"]) == 18 and set(data["spearman_e_per_eta0"]) == {"0.1", "0.2"}


def test_fig4_one_seed_is_undetermined(tmp_path):
    claims = make_fig4(fig4_runs(True, seeds=(0,)), 0.01, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    assert [c.verdict for c in claims] == ["undetermined"] * 2 and claims[0].value == -1.0
    assert claims[0].reason == "too little evidence: seeds 1 < 3"
    assert (tmp_path / "f.png").stat().st_size > 0


def test_second_half_ratio_uses_the_second_half():
    c = cube(0.1, [0, 25, 50, 75, 100], [1.0, 1.0, 20.0, 18.0, 22.0])
    assert second_half_ratio(c) == pytest.approx(0.1 * 20.0 / 2)


def test_eos_claims(tmp_path):
    def seeds(make, n=3):
        return [c for seed in range(n) for c in make(seed)]

    def edge(seed):
        at_edge = cube(0.2, np.arange(0, 101, 10), [5] * 5 + [10.0, 9.5, 10.5, 10.0, 9.8, 10.2 + seed], seed=seed)
        below = cube(0.02, np.arange(0, 101, 10), np.linspace(5, 40 + seed, 11), seed=seed)   # 2/η = 100
        return [at_edge, below]
    claims = make_eos(seeds(edge), tmp_path / "e.pdf", tmp_path / "e.png", tmp_path / "e.json")
    assert [c.verdict for c in claims] == ["holds"] * 3
    # runs "below the limit" that sit at 2/η fail the third claim; ones far past it fail the second
    claims = make_eos(seeds(lambda s: [cube(0.2, [0, 50, 100], [5, 40 + s, 40], seed=s),
                                       cube(0.02, [0, 50, 100], [5, 100 + s, 100], seed=s)]),
                      tmp_path / "e.pdf", tmp_path / "e.png", tmp_path / "e.json")
    assert [c.verdict for c in claims] == ["holds", "fails", "fails"]
    runs = json.loads((tmp_path / "e.json").read_text())["runs"]
    assert [r["above_limit"] for r in runs] == [False, False, False, True, True, True]
    # one seed: undetermined, with its values
    claims = make_eos(edge(0), tmp_path / "e.pdf", tmp_path / "e.png", tmp_path / "e.json")
    assert [c.verdict for c in claims] == ["undetermined"] * 3 and all(c.value is not None for c in claims)
