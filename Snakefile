# tuwen: Chinese image–text retrieval with CN-CLIP (Teddy Cup 2024, problem B).
# Contest folders in; result1.csv, result2.csv, figures and recall out. See README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: workflow.source_path("config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/settings.smk"
include: "rules/demo.smk"
include: "rules/ingest.smk"
include: "rules/shards.smk"
include: "rules/models.smk"
include: "rules/encode.smk"
include: "rules/sentences.smk"
include: "rules/train.smk"
include: "rules/fusion.smk"
include: "rules/retrieve.smk"
include: "rules/index.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),


onsuccess:
    print_closing_summary()
