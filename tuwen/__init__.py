"""tuwen: Chinese image–text retrieval with CN-CLIP, as a Snakemake workflow's library."""

__version__ = "0.1.0"
