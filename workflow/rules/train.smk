rule train:
    input:
        unpack(fork_parent),
        data=lambda w: data_path(w.setting),
    output:
        metrics=f"{RUNS}/metrics.nc",
        snapshots=f"{RUNS}/snapshots.pt",
    params:
        cfg=run_config,
        schedule=schedule_of,
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
