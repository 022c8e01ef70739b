# Models: the base model's weights and the card that names them. The card is a
# checkpoint because feature paths carry the model tag (name + weights digest).


rule init_model:
    output:
        "results/models/init/{arch}-seed{seed}.pt",
    log:
        "results/logs/init_model/{arch}-seed{seed}.log",
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
        settings=settings_file("model"),
    output:
        card="results/models/{stage}/model.json",
    log:
        "results/logs/describe_model/{stage}.log",
    priority: 10
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
    script:
        "../scripts/describe_model.py"
