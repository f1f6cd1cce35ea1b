rule hessian:
    input:
        data=lambda w: data_path(w.setting),
        metrics=f"{RUNS}/metrics.nc",
        snapshots=f"{RUNS}/snapshots.pt",
    output:
        cube=f"{RUNS}/cube.nc",
    params:
        cfg=hessian_config,
    log:
        "results/logs/hessian/{exp}/{setting}/{sched}/lr{lr}_seed{seed}.log",
    benchmark:
        "results/benchmarks/hessian/{exp}/{setting}/{sched}/lr{lr}_seed{seed}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=gpu_request,
    conda:
        "../../envs/eosflow.yaml"
    script:
        "../scripts/hessian.py"
