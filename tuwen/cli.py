"""Query a finished run from the command line, without Snakemake and without re-encoding.

    python -m tuwen search "一只橙色的猫"            # text → the run's 附件2 images
    python -m tuwen search --image photo.jpg        # image → the run's 附件3 captions
    python -m tuwen serve                           # a page and a JSON API on 127.0.0.1:8000

The query is encoded with the model the run retrieved with (its tag is in the run's
top-k table), and searched exactly, as the workflow searches, over the run's current
feature shards of the gallery. Problems are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from tuwen import layout
from tuwen.errors import TuwenError


class RunError(TuwenError):
    """A run folder that cannot answer a query, and what to do about it."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tuwen", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="top-k of one caption or image against a finished run")
    search.add_argument("text", nargs="?", help="a caption to find images for")
    search.add_argument("--image", type=Path, help="an image file to find captions for")
    search.add_argument("--run", type=Path, default=Path("."), help="folder holding the run's results/ (.)")
    search.add_argument("--top", type=int, default=5, help="how many hits to print (5)")
    search.add_argument(
        "--by",
        help="rank by a sentence encoder's channel alone (by meaning), e.g. text:use-m3; "
        "an image's text is read by OCR",
    )
    search.add_argument(
        "--gallery",
        help="encoded collection to search (default: the gallery of the run's task for such queries)",
    )
    serve = commands.add_parser("serve", help="a search page and JSON API over a finished run")
    serve.add_argument("--run", type=Path, default=Path("."), help="folder holding the run's results/ (.)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (8000)")
    serve.add_argument("--max-body-mb", type=float, default=20, help="largest upload accepted, MB (20)")
    serve.add_argument("--ground-truth", type=Path, help="text_id,image_id CSV for ✓ (default: the run's)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return args
    if (args.text is None) == (args.image is None):
        parser.error("give either a caption or --image PATH, not both")
    if args.top < 1:
        parser.error("--top must be at least 1")
    return args


def run_model_card(run: Path, query_kind: str) -> Path:
    """Give the model card of the model the run ranks queries of `query_kind` with."""
    from tuwen.finished import card_of_tag, ranking_tag
    from tuwen.run import read_run

    try:
        return card_of_tag(run, ranking_tag(run, read_run(run), query_kind))
    except TuwenError as error:
        raise RunError(str(error)) from None


def gallery_files(run: Path, tag: str, gallery: str) -> tuple[list[Path], pd.DataFrame]:
    from tuwen.run import read_run

    shards = sorted((run / layout.features_folder(tag, gallery)).glob("*.parquet"))
    assignment = run / layout.assignment(gallery)
    if gallery not in read_run(run).collections or not shards or not assignment.is_file():
        folder = (run / layout.features_folder(tag, gallery)).parent
        encoded = ", ".join(sorted(p.name for p in folder.glob("*") if p.is_dir()))
        raise RunError(f"{run}: no features of gallery {gallery!r} for model {tag} (encoded: {encoded})")
    return shards, pd.read_parquet(assignment, columns=["id", "digest"])


def encode_query(card_path: Path, run: Path, text: str | None, image: Path | None):
    """Give the run's model's embedding of the query (L2-normalised, one row), and its logit scale."""
    from tuwen.encode import encode_caption, encode_picture
    from tuwen.images import ImageRejected, load_image
    from tuwen.models import ModelCard, ModelError, load_model

    card = ModelCard.read(card_path)
    try:
        model = load_model(card.arch, card.checkpoint_in(run))
    except ModelError as error:
        raise RunError(f"the run's model {card.tag} cannot be loaded: {error}") from None
    if text is not None:
        embedding = encode_caption(model, text)
    else:
        try:
            picture, _ = load_image(image)
        except ImageRejected as rejected:
            raise RunError(rejected.message) from None
        embedding = encode_picture(model, picture, card.arch.resolution)
    return embedding[None, :], float(model.logit_scale.exp().item()), card.tag


def sentence_files(run: Path, channel: str, gallery: str) -> tuple[list[Path], pd.DataFrame]:
    """Give a gallery's sentence-embedding shards of a text:<encoder> channel, and its current items."""
    from tuwen.sentences import CHANNEL_PREFIX

    if not channel.startswith(CHANNEL_PREFIX):
        raise RunError(
            f"--by takes a sentence encoder's channel, text:<encoder> (e.g. text:use-m3), not {channel!r}"
        )
    encoder = channel.removeprefix(CHANNEL_PREFIX)
    shards = sorted((run / layout.sentences_folder(encoder, gallery)).glob("*.parquet"))
    assignment = run / layout.assignment(gallery)
    if not shards or not assignment.is_file():
        folder = (run / layout.sentences_folder(encoder, gallery)).parent
        embedded = ", ".join(sorted(p.name for p in folder.glob("*") if p.is_dir())) or "none"
        raise RunError(f"{run}: gallery {gallery!r} has no embeddings of {channel} (embedded: {embedded})")
    return shards, pd.read_parquet(assignment, columns=["id", "digest"])


def encode_by_meaning(run: Path, channel: str, text: str | None, image: Path | None):
    """Give the query's sentence embedding (one row): the caption's, or the text OCR reads in the image."""
    from tuwen.sentences import CHANNEL_PREFIX, EncoderMissing, load_sentence_encoder

    if text is None:
        from tuwen.images import ImageRejected, load_image
        from tuwen.ocr import read_picture_text, run_ocr_engine

        try:
            picture, _ = load_image(image)
        except ImageRejected as rejected:
            raise RunError(rejected.message) from None
        text = read_picture_text(run_ocr_engine(run), picture, str(image)).text
    try:
        encoder = load_sentence_encoder(channel.removeprefix(CHANNEL_PREFIX))
    except EncoderMissing as error:
        raise RunError(str(error)) from None
    return encoder.encode([text])


def describe_hits(run: Path, gallery: str, hits: pd.DataFrame) -> pd.DataFrame:
    """Add what each hit is: the caption of a text, the file of an image."""
    from tuwen.run import read_run

    collection = read_run(run).collections[gallery]
    manifest = run / layout.manifest(gallery, collection.kind)
    if not collection.holds_images:
        from tuwen.ingest import accepted_captions

        shown = accepted_captions(manifest)
    else:
        images = pd.read_parquet(manifest, columns=["image_id", "path"])
        shown = images.drop_duplicates("image_id").set_index("image_id")["path"]
    return hits.assign(what=hits["target_id"].map(shown).fillna(""))


def search(args: argparse.Namespace) -> pd.DataFrame:
    from tuwen.finished import default_gallery
    from tuwen.parquet import FeatureShard
    from tuwen.retrieval import search_gallery
    from tuwen.run import read_run

    kind = layout.TEXTS if args.text is not None else layout.IMAGES
    try:
        gallery = args.gallery or default_gallery(read_run(args.run), kind)
    except TuwenError as error:
        raise RunError(str(error)) from None
    if args.by:
        shards, current = sentence_files(args.run, args.by, gallery)
        embedding, logit_scale = encode_by_meaning(args.run, args.by, args.text, args.image), 100.0
    else:
        card = run_model_card(args.run, kind)
        tag = json.loads(card.read_text(encoding="utf-8"))["tag"]
        shards, current = gallery_files(args.run, tag, gallery)
        embedding, logit_scale, _ = encode_query(card, args.run, args.text, args.image)
    query = FeatureShard(["query"], embedding, [""], {"logit_scale": logit_scale})
    hits = search_gallery(query, shards, current, min(args.top, len(current)))
    return describe_hits(args.run, gallery, hits)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "serve":
        from tuwen.serve.app import serve

        try:
            serve(args.run, args.host, args.port, int(args.max_body_mb * 1024 * 1024), args.ground_truth)
        except TuwenError as error:
            print(f"tuwen serve: {error}", file=sys.stderr)
            return 2
        return 0
    started = time.perf_counter()
    try:
        hits = search(args)
    except TuwenError as error:
        print(f"tuwen search: {error}", file=sys.stderr)
        return 2
    for row in hits.itertuples(index=False):
        print(f"{row.rank}\t{row.cosine:.4f}\t{row.probability:.4f}\t{row.target_id}\t{row.what}")
    print(f"({len(hits)} hits in {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0
