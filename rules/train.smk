# Stage 4, train: contrastive fine-tuning of CN-CLIP on the 附件1 pairs, resumable.
# The resumable state lives in results/models/{run}/state/, outside the declared outputs,
# so a killed job continues where it stopped when the workflow is run again.


rule train_model:
    input:
        unpack(train_inputs),
    output:
        checkpoint="results/models/{run}/checkpoint.pt",
        log_table="results/models/{run}/train_log.csv",
        metrics="results/models/{run}/val_metrics.json",
        metrics_table=report(
            "results/models/{run}/val_metrics.csv",
            caption="../report/val_metrics.rst",
            category="Training",
        ),
        curves=report(
            "results/models/{run}/curves.png",
            caption="../report/curves.rst",
            category="Training",
        ),
    log:
        "results/logs/train_model/{run}.log",
    benchmark:
        "results/benchmarks/train_model/{run}.tsv"
    conda:
        "../envs/tuwen.yaml"
    threads: 2
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=16000,
        runtime=1440,
    params:
        state=train_state_path,
    script:
        "../scripts/train_model.py"
