# Tags: per image collection, every photo's best labels of the run's labels file, zero-shot,
# by the run's ranking model (its image features, and its text tower for the labels' prompts).


rule tag_images:
    input:
        unpack(tag_inputs),
        settings=settings_file("tags"),
    output:
        layout.tags("{col}"),
    log:
        layout.log("tag_images", "{col}"),
    wildcard_constraints:
        col="|".join(plans.tagged_collections(RUN, config)) or "(?!)",
    conda:
        "../envs/tuwen.yaml"
    threads: HEAVY_JOB_THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/tag_images.py"
