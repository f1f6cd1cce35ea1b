"""Figure 2: eigenvector rotation through instabilities, and its undoing by branch runs; the first
seed drawn, the claims over every seed (fig2.seeds)."""
from eosflow.cubes import open_cube
from eosflow.figures.fig2 import make_fig2
from eosflow.files import read_json
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    plans = [read_json(p, "fig2 plan") for p in sm.input.plans]
    branches = {int(p["seed"]): [] for p in plans}
    for path in sm.input.branches:
        cube = open_cube(path, require=("eigvec",))
        branches[int(cube["seed"])].append(cube)
    runs = [{"plan": plan, "vectors": open_cube(v, require=()), "branches": branches[int(plan["seed"])]}
            for plan, v in zip(plans, sm.input.vectors)]
    runs[0]["baseline"] = open_cube(sm.input.baselines[0])
    make_fig2(runs, sm.output.pdf, sm.output.png, sm.output.claims)
