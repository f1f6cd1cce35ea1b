rule train:
    input:
        unpack(fork_parent),
        data=lambda w: data_path(w.setting),
    output:
        metrics=f"{RUNS}/metrics.nc",
        snapshots=f"{RUNS}/snapshots.pt",
    params:
        spec=train_spec,
        checkpoint=f"{RUNS}/checkpoint.pt",
    log:
        "results/logs/train/{exp}/{setting}/{sched}/lr{lr}_seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{exp}/{setting}/{sched}/lr{lr}_seed{seed}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=gpu_request,
    conda:
        "../../envs/eosflow.yaml"
    script:
        "../scripts/train.py"


if config["fig5"]["batched"]:

    ruleorder: train_group > train

    rule train_group:
        # fig5.batched: a setting and seed's whole fig5 grid in one process (vmap over stacked
        # parameters); the same files as rule train writes, run by run. fig5's settings only:
        # another grid's sweep runs (the generalization map's cells) stay one job per run
        wildcard_constraints:
            setting="|".join(config["fig5"]["settings"]),
        input:
            data=lambda w: data_path(w.setting),
        output:
            [
                f"results/runs/sweep/{{setting}}/const/lr{tag}/seed{{seed}}/{name}"
                for tag in sweep_lr_tags(config["fig5"])
                for name in ("metrics.nc", "snapshots.pt")
            ],
        params:
            specs=group_specs,
            checkpoint="results/runs/sweep/{setting}/const/group_seed{seed}.pt",
        log:
            "results/logs/train_group/sweep/{setting}/seed{seed}.log",
        benchmark:
            "results/benchmarks/train_group/sweep/{setting}/seed{seed}.tsv"
        threads: 1
        # the CNN's groups are the default build's longest jobs: started first, none is left for its end
        priority: 10
        resources:
            mem_mb=lambda wildcards, attempt: 2000 * len(sweep_lr_tags(config["fig5"])) * attempt,
            runtime=lambda wildcards, attempt: 60 * len(sweep_lr_tags(config["fig5"])) * attempt,
            gpu=gpu_request,
        conda:
            "../../envs/eosflow.yaml"
        script:
            "../scripts/train_group.py"
