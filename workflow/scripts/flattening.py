"""fig4, fig6, ext/mse_flattening: S_max after the switch to a small η against the length of the
large-η phase (one protocol, eosflow.figures.flattening)."""
from eosflow.cubes import open_cube
from eosflow.figures.flattening import make_flattening
from eosflow.logs import rule_logging

sm = snakemake  # noqa: F821
with rule_logging(sm.log[0]):
    p = sm.params
    runs = [{**r, "cube": open_cube(r["path"])} for r in p.runs]
    make_flattening(runs, p.lr_small, sm.output.pdf, sm.output.png, sm.output.claims, figure=p.figure,
                    title=p.title, relative=p.relative)
