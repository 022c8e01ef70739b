# tuwen: Chinese image–text retrieval with CN-CLIP (Teddy Cup 2024, problem B).
# Collections in; ranked tables, figures, recall, a browse page and a searchable run out.
# See README.md; docs/architecture.md maps the stages and the package.

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
include: "rules/duplicates.smk"
include: "rules/tags.smk"
include: "rules/report.smk"
include: "rules/finish.smk"


rule all:
    default_target: True
    input:
        plans.run_targets(RUN, config),


onsuccess:
    print_closing_summary()
