# The run's last job: a record of every file a reader of the finished run reads (the server,
# the export, the command line), with each file's size and modification time. A reader
# trusts the run only while every file still matches it, so a rerun in progress is never
# read half-rewritten (tuwen.finished).


rule finish_run:
    input:
        unpack(finished_inputs),
    output:
        layout.finished(),
    log:
        layout.log("finish_run"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        plan=finished_plan,
    script:
        "../scripts/finish_run.py"
