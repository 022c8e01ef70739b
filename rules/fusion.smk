# Fusion (fusion.enabled): the validation task from 附件1's held-out pairs, the text read in
# the images (OCR), and the choice of channels, weights and re-ranking made on validation.


rule validation_split:
    input:
        images="results/manifest/train_images/images.parquet",
        texts="results/manifest/train_texts/texts.parquet",
        settings=settings_file("validation"),
    output:
        images="results/manifest/val_images/images.parquet",
        texts="results/manifest/val_texts/texts.parquet",
    log:
        "results/logs/validation_split.log",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/validation_split.py"


rule ocr_shard:
    input:
        shard_list=shard_list,
        settings=settings_file("ocr"),
    output:
        "results/ocr/{col}/{shard}.parquet",
    log:
        "results/logs/ocr/{col}/{shard}.log",
    benchmark:
        "results/benchmarks/ocr/{col}/{shard}.tsv"
    conda:
        "../envs/tuwen.yaml"
    threads: HEAVY_JOB_THREADS
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=4000,
        runtime=shard_runtime("image", 1.0),
    script:
        "../scripts/ocr_shard.py"


rule tune_fusion:
    input:
        unpack(tune_fusion_inputs),
        settings=settings_file("fusion"),
    output:
        chosen="results/fusion/chosen.json",
        table="results/fusion/validation.csv",
    log:
        "results/logs/tune_fusion.log",
    benchmark:
        "results/benchmarks/tune_fusion.tsv"
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        stages=STAGES,
    script:
        "../scripts/tune_fusion.py"


rule evaluate_fusion:
    input:
        unpack(evaluate_fusion_inputs),
        validation="results/fusion/validation.csv",
        chosen="results/fusion/chosen.json",
    output:
        table=report(
            "results/eval/fusion.csv",
            caption="../report/fusion.rst",
            category="Evaluation",
        ),
    log:
        "results/logs/evaluate_fusion.log",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        stages=STAGES,
    script:
        "../scripts/evaluate_fusion.py"


rule account_ocr:
    input:
        ocr=ocr_inputs,
    output:
        counts="results/summary/ocr.csv",
        failures="results/summary/ocr_failures.csv",
    log:
        "results/logs/account_ocr.log",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        collections=OCR_COLLECTIONS,
    script:
        "../scripts/account_ocr.py"
