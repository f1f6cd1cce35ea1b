"""Figure 4: S_max after the switch to a small η against the length of the large-η phase."""
from eosflow.cubes import open_cube
from eosflow.figures.fig4 import make_fig4
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    runs = [{**r, "cube": open_cube(r["path"])} for r in sm.params.runs]
    make_fig4(runs, sm.params.lr_small, sm.output.pdf, sm.output.png, sm.output.claims)
