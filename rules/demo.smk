# The embedded demo dataset, generated when data_root is "demo": the contest layout.


rule generate_demo:
    input:
        settings=settings_file("demo"),
    output:
        **{
            what: directory(path) if what in DEMO_FOLDERS else path
            for what, path in DEMO_FILES.items()
        },
    log:
        layout.log("generate_demo"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    params:
        root=demo_root,
    script:
        "../scripts/generate_demo.py"
