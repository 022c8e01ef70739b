# Fusion (fusion.enabled, or several models): the validation task from the training pairs
# held out, the text read in the images (OCR), and the choice of channels, weights and
# re-ranking made on validation, per direction (t2i, i2t).


rule validation_split:
    input:
        unpack(validation_pairs),
        settings=settings_file("validation"),
    output:
        images=layout.manifest(VAL_IMAGES, IMAGES),
        texts=layout.manifest(VAL_TEXTS, TEXTS),
    log:
        layout.log("validation_split"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        held_out=not RUN.validates_apart,
    script:
        "../scripts/validation_split.py"


rule ocr_shard:
    input:
        shard_list=shard_list,
        settings=settings_file("ocr"),
    output:
        layout.ocr("{col}", "{shard}"),
    log:
        layout.log("ocr", "{col}", "{shard}"),
    benchmark:
        layout.benchmark("ocr", "{col}", "{shard}")
    conda:
        "../envs/tuwen.yaml"
    threads: HEAVY_JOB_THREADS
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=4000,
        runtime=shard_runtime(IMAGES, 1.0),
    script:
        "../scripts/ocr_shard.py"


rule tune_fusion:
    input:
        unpack(validation_fusion_inputs),
        cards=plans.model_cards(RUN),
        pairs=layout.manifest(VAL_TEXTS, TEXTS),
        settings=settings_file("fusion"),
    output:
        chosen=layout.fusion("chosen.json"),
        table=layout.fusion("validation.csv"),
    log:
        layout.log("tune_fusion"),
    benchmark:
        layout.benchmark("tune_fusion")
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        plan=validation_fusion_plan,
    script:
        "../scripts/tune_fusion.py"


rule evaluate_fusion:
    input:
        unpack(test_fusion_inputs),
        validation=layout.fusion("validation.csv"),
        chosen=layout.fusion("chosen.json"),
        truth_settings=settings_file("ground_truth") if RUN.judged_tasks() else [],
    output:
        table=report(
            layout.evaluation("fusion.csv"),
            caption="../report/fusion.rst",
            category="Evaluation",
        ),
    log:
        layout.log("evaluate_fusion"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        plan=test_fusion_plan,
    script:
        "../scripts/evaluate_fusion.py"


rule account_ocr:
    input:
        unpack(ocr_inputs),
    output:
        counts=layout.summary("ocr.csv"),
        failures=layout.summary("ocr_failures.csv"),
    log:
        layout.log("account_ocr"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plan=ocr_plan,
    script:
        "../scripts/account_ocr.py"
