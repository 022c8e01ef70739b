# Sentence embeddings for fusion's text:<encoder> channels: each caption, and the text OCR read
# in each image, encoded by a pretrained multilingual sentence encoder (tuwen/sentences.py),
# one job per shard, cached and incremental like the features.


rule describe_sentence_encoder:
    input:
        settings=settings_file("sentences"),
    output:
        card=layout.sentence_encoder_card("{encoder}"),
    log:
        layout.log("describe_sentence_encoder", "{encoder}"),
    wildcard_constraints:
        encoder="|".join(RUN.text_encoders) or "(?!)",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/describe_sentence_encoder.py"


rule embed_sentences:
    input:
        unpack(sentence_inputs),
        card=sentence_card,
    output:
        layout.sentences("{encoder}", "{name}", "{shard}"),
    log:
        layout.log("embed_sentences", "{encoder}", "{name}", "{shard}"),
    benchmark:
        layout.benchmark("embed_sentences", "{encoder}", "{name}", "{shard}")
    wildcard_constraints:
        encoder="|".join(RUN.text_encoders) or "(?!)",
    conda:
        "../envs/tuwen.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=shard_runtime(TEXTS, 0.05),
    script:
        "../scripts/embed_sentences.py"
