# The settings each stage's results depend on, one file per group (tuwen/settings.py), and
# the declared run itself (run.json, for the readers of a finished run). A shell command,
# not a Python job: a file of a few lines is not worth a job's start-up.


rule record_settings:
    output:
        layout.settings("{group}"),
    log:
        layout.log("record_settings", "{group}"),
    wildcard_constraints:
        group=group_pattern(),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    params:
        settings=settings_of,
    shell:
        "printf '%s\\n' {params.settings:q} | tee {output} > {log}"
