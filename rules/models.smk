# Models: each model's weights and the card that names them. The card is a checkpoint
# because feature paths carry the model tag (name + weights digest).


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
