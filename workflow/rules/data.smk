rule prepare_data:
    input:
        data_inputs,
    output:
        "results/data/{dataset}_n{n_train}_t{n_test}_s{subset_seed}.pt",
    params:
        spec=data_spec,
    log:
        "results/logs/data/{dataset}_n{n_train}_t{n_test}_s{subset_seed}.log",
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/eosflow.yaml"
    script:
        "../scripts/prepare_data.py"
