# Models: each model's weights, the card that names them, and its towers exported to ONNX.
# The card is a checkpoint because feature paths carry the model tag (name + weights
# digest, and -int8 when it encodes in int8).


rule init_model:
    output:
        layout.init_checkpoint("{arch}", "{seed}"),
    log:
        layout.log("init_model", "{arch}-seed{seed}"),
    # First among the jobs that can start at once: every encode job waits for the card.
    priority: 10
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/init_model.py"


checkpoint describe_model:
    input:
        checkpoint=model_checkpoint,
        settings=model_card_settings,
    output:
        card=layout.model_card("{model}", "{stage}"),
    log:
        layout.log("describe_model", "{model}", "{stage}"),
    priority: 10
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
    script:
        "../scripts/describe_model.py"


# Every model stage is exported, whichever backend encodes: encode jobs always read the
# description, so that changing encode.backend (speed only) changes none of their inputs.
rule export_towers:
    input:
        card=layout.model_card("{model}", "{stage}"),
    output:
        towers=layout.model_towers("{model}", "{stage}"),
        text=layout.model_towers("{model}", "{stage}", "text.onnx"),
        image=layout.model_towers("{model}", "{stage}", "image.onnx"),
    log:
        layout.log("export_towers", "{model}", "{stage}"),
    benchmark:
        layout.benchmark("export_towers", "{model}", "{stage}")
    priority: 10
    conda:
        "../envs/tuwen.yaml"
    threads: HEAVY_JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=30,
    script:
        "../scripts/export_towers.py"
