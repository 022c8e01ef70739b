# The embedded demo dataset, generated when data_root is "demo".


rule generate_demo:
    input:
        settings=settings_file("demo"),
    output:
        train_images=directory("results/demo/data/附件1/ImageData"),
        train_pairs="results/demo/data/附件1/ImageWordData.csv",
        t2i_gallery=directory("results/demo/data/附件2/ImageData"),
        t2i_queries="results/demo/data/附件2/word_test.csv",
        i2t_images=directory("results/demo/data/附件3/ImageData"),
        i2t_queries="results/demo/data/附件3/image_test.csv",
        i2t_gallery="results/demo/data/附件3/word_data.csv",
        ground_truth="results/demo/data/ground_truth.csv",
    log:
        "results/logs/generate_demo.log",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    params:
        root=demo_root,
    script:
        "../scripts/generate_demo.py"
