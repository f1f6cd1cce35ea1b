# eosflow: the figures of Wang & Roberts (arXiv 2412.17613) from raw data to PDF.
# Entry point only: configuration, validation (common.smk), the input functions (inputs.smk), the rule
# files in data-flow order (the shared stages, then one file per figure), rule all.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/inputs.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/hessian.smk"
include: "workflow/rules/fig1.smk"
include: "workflow/rules/fig2.smk"
include: "workflow/rules/fig3.smk"
include: "workflow/rules/fig4.smk"
include: "workflow/rules/fig5.smk"
include: "workflow/rules/eos.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/optimizers.smk"
include: "workflow/rules/sgd_flattening.smk"
include: "workflow/rules/clipped_ada.smk"
include: "workflow/rules/flattening.smk"
include: "workflow/rules/sweep_figures.smk"
include: "workflow/rules/fig9.smk"
include: "workflow/rules/fig12.smk"
include: "workflow/rules/layers.smk"
include: "workflow/rules/spectrum.smk"
include: "workflow/rules/undescribed.smk"


rule all:
    input:
        all_targets(),
    default_target: True
