# Runs of other optimizers (minibatch SGD, Adam, RMSprop, Clipped-Ada) for figures/ext/sgd_flattening.pdf
# and figures/ext/clipped_ada.pdf: one job per run trains it and measures its spectra into its cube.


rule optimizer_run:
    input:
        data=lambda w: data_path(w.setting),
    output:
        cube=f"{OPT_RUNS}/cube.nc",
    params:
        spec=optimizer_spec,
        checkpoint=f"{OPT_RUNS}/checkpoint.pt",
    log:
        "results/logs/optimizer_run/{optfig}/{setting}/{opt}/lr{lr}_seed{seed}.log",
    benchmark:
        "results/benchmarks/optimizer_run/{optfig}/{setting}/{opt}/lr{lr}_seed{seed}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=gpu_request,
    conda:
        "../../envs/eosflow.yaml"
    script:
        "../scripts/optimizer_run.py"
