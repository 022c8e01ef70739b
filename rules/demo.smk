# The embedded demo dataset, generated when data_root is "demo".


rule generate_demo:
    input:
        settings=settings_file("demo"),
    output:
        train_images=directory(data_path(COLLECTIONS["train_images"].source)),
        train_pairs=data_path(COLLECTIONS["train_texts"].source),
        t2i_gallery=directory(data_path(COLLECTIONS["t2i_gallery"].source)),
        t2i_queries=data_path(COLLECTIONS["t2i_queries"].source),
        i2t_images=directory(data_path(COLLECTIONS["i2t_images"].source)),
        i2t_queries=data_path(TASKS["i2t"].query_list),
        i2t_gallery=data_path(COLLECTIONS["i2t_gallery"].source),
        ground_truth=data_path("ground_truth.csv"),
    log:
        layout.log("generate_demo"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    params:
        root=demo_root,
    script:
        "../scripts/generate_demo.py"
