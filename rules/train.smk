# Stage 4, train: contrastive fine-tuning of each model on the 附件1 pairs, resumable.
# The resumable state lives in results/models/{model}/finetune/state/, outside the
# declared outputs, so a killed job continues where it stopped when the workflow is run again.


rule train_model:
    input:
        unpack(train_inputs),
        pairs=layout.manifest(TRAIN_TEXTS, TEXTS),
        images=layout.manifest(TRAIN_IMAGES, IMAGES),
        card=base_card,
        settings=train_settings,
    output:
        checkpoint=layout.fine_tuned("{model}", "checkpoint.pt"),
        log_table=layout.fine_tuned("{model}", "train_log.csv"),
        metrics=layout.fine_tuned("{model}", "val_metrics.json"),
        metrics_table=report(
            layout.fine_tuned("{model}", "val_metrics.csv"),
            caption="../report/val_metrics.rst",
            category="Training",
            subcategory="{model}",
        ),
        curves=report(
            layout.fine_tuned("{model}", "curves.png"),
            caption="../report/curves.rst",
            category="Training",
            subcategory="{model}",
        ),
    log:
        layout.log("train_model", "{model}"),
    benchmark:
        layout.benchmark("train_model", "{model}")
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
