"""Query a finished run from the command line, without Snakemake and without re-encoding.

    python -m tuwen search "一只橙色的猫"            # text → the run's 附件2 images
    python -m tuwen search --image photo.jpg        # image → the run's 附件3 captions
    python -m tuwen serve                           # a page and a JSON API on 127.0.0.1:8000
    python -m tuwen export milvus --uri gallery.db  # the galleries into Milvus (here: Milvus Lite)

A query is ranked exactly as `tuwen serve` ranks it, which is how the run's result table ranks
the run's own queries (tuwen.ranking.scoring): the ranking model's cosine, or the fusion chosen on
validation with its re-ranking, over the run's current feature shards of the gallery. Each
line: rank, score, the ranking model's cosine, id, and the caption or image file.
Problems are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tuwen.errors import TuwenError
from tuwen.run.declaration import IMAGES, TEXTS

BACKEND_CHOICES = ("auto", "torch", "onnxruntime")  # encode.backend's
BACKEND_HELP = (
    "what encodes the query: auto (the default: ONNX Runtime where the run's export of the model "
    "is exact, else torch; an int8 model always ONNX Runtime), torch or onnxruntime"
)


class SearchError(TuwenError):
    """A search the command line cannot run as asked (an unknown gallery, an unreadable image)."""


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
        help="rank by one channel alone, e.g. text:use-m3 (by meaning; an image's text is read by "
        "OCR), or by hybrid: the words read in the photos and the model together (keywords.enabled)",
    )
    search.add_argument(
        "--gallery",
        help="encoded collection to search (default: the gallery of the run's task for such queries)",
    )
    search.add_argument("--milvus", help="search the galleries exported to this Milvus (URI or Lite file)")
    search.add_argument("--backend", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    search.add_argument("--tag", help="only the photos with this zero-shot tag (a run with tags.labels)")
    search.add_argument("--prefix", help="only the photos under this sub-folder (an id prefix: 2024/05/)")
    search.add_argument("--after", help="only the photos taken on or after YYYY-MM-DD (EXIF, else mtime)")
    search.add_argument("--before", help="only the photos taken on or before YYYY-MM-DD")
    search.add_argument("--format", help="only the photos of this format (JPEG, PNG, HEIF, ...)")
    serve = commands.add_parser("serve", help="a search page and JSON API over a finished run")
    serve.add_argument("--run", type=Path, default=Path("."), help="folder holding the run's results/ (.)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (8000)")
    serve.add_argument("--max-body-mb", type=float, default=20, help="largest upload accepted, MB (20)")
    serve.add_argument("--ground-truth", type=Path, help="text_id,image_id CSV for ✓ (default: the run's)")
    serve.add_argument("--milvus", help="search the galleries exported to this Milvus (URI or Lite file)")
    serve.add_argument("--backend", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    export = commands.add_parser(
        "export", help="a finished run's galleries into Milvus or clip-retrieval's layout"
    )
    export.add_argument("target", choices=["milvus", "clip-retrieval"])
    export.add_argument("--run", type=Path, default=Path("."), help="folder holding the run's results/ (.)")
    export.add_argument("--uri", help="milvus: the server (http://host:19530) or a Milvus Lite file (x.db)")
    export.add_argument("--token", default="", help="milvus: user:password or API key")
    export.add_argument("--prefix", default="tuwen_", help="milvus: collection name prefix (tuwen_)")
    export.add_argument("--out", type=Path, help="clip-retrieval: the folder to write")
    export.add_argument("--gallery", action="append", help="only this gallery (may be repeated)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return args
    if args.command == "export":
        if args.target == "milvus" and not args.uri:
            parser.error("export milvus needs --uri (a server URI or a Milvus Lite file)")
        if args.target == "clip-retrieval" and not args.out:
            parser.error("export clip-retrieval needs --out FOLDER")
        return args
    if (args.text is None) == (args.image is None):
        parser.error("give either a caption or --image PATH, not both")
    if args.top < 1:
        parser.error("--top must be at least 1")
    return args


def search(args: argparse.Namespace) -> tuple[dict, dict]:
    """Give the answer to the query, ranked as `tuwen serve` ranks it (tuwen.serve.loaded_run,
    whose scoring is the result tables': tuwen.ranking.scoring), and what each hit is."""
    from tuwen.finished.reader import read_finished
    from tuwen.serve.loaded_run import Filters, LoadedRun

    kind = TEXTS if args.text is not None else IMAGES
    finished = read_finished(args.run)
    gallery = args.gallery or finished.default_gallery(kind)
    loaded = LoadedRun(finished, only={gallery}, milvus=args.milvus, backend=args.backend)
    if gallery not in loaded.collections:
        encoded = ", ".join(finished.collections) or "none"
        raise SearchError(f"{args.run}: no features of gallery {gallery!r} (collections: {encoded})")
    if args.text is not None:
        query = loaded.text_query(args.text, gallery, args.by)
    else:
        try:
            data = args.image.read_bytes()
        except OSError as error:
            raise SearchError(
                f"{args.image}: {'does not exist' if not args.image.exists() else error}"
            ) from None
        query = loaded.image_query(data, gallery, str(args.image), args.by)
    filters = Filters(args.tag, args.prefix, args.after, args.before, args.format)
    return loaded.search(query, gallery, args.top, args.by, filters), describe_hits(loaded, gallery)


def describe_hits(loaded, gallery: str) -> dict:
    """Give what each item is: the caption of a text, the file of an image."""
    collection = loaded.collections[gallery]
    if collection.files is not None:
        return {item: path for item, (path, _) in collection.files.items()}
    return collection.captions


def export(args: argparse.Namespace) -> int:
    """Export the run's galleries; one line per gallery of what the target now holds."""
    from tuwen.export.clip_retrieval import export_clip_retrieval
    from tuwen.export.milvus import export_milvus

    try:
        if args.target == "milvus":
            done = export_milvus(args.run, args.uri, args.gallery, args.prefix, args.token)
        else:
            done = export_clip_retrieval(args.run, args.out, args.gallery)
    except TuwenError as error:
        print(f"tuwen export: {error}", file=sys.stderr)
        return 2
    for item in done:
        print("\t".join(f"{key}={value}" for key, value in item.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "serve":
        from tuwen.serve.app import serve

        try:
            max_body = int(args.max_body_mb * 1024 * 1024)
            serve(args.run, args.host, args.port, max_body, args.ground_truth, args.milvus, args.backend)
        except TuwenError as error:
            print(f"tuwen serve: {error}", file=sys.stderr)
            return 2
        return 0
    if args.command == "export":
        return export(args)
    started = time.perf_counter()
    try:
        answer, what = search(args)
    except TuwenError as error:
        print(f"tuwen search: {error}", file=sys.stderr)
        return 2
    if answer.get("warning"):
        print(f"tuwen search: WARNING: {answer['warning']}", file=sys.stderr)
    for hit in answer["hits"]:
        line = (
            f"{hit['rank']}\t{hit['score']:.6f}\t{hit['cosine']:.6f}\t{hit['id']}\t{what.get(hit['id'], '')}"
        )
        if "found_by" in hit:  # by keyword and meaning: each list's rank of the hit
            line += "\t" + " ".join(f"{name}#{rank}" for name, rank in hit["found_by"].items())
        print(line)
    how = "exact" if answer["exact"] else f"approximate ({answer['search']['index']})"
    took = time.perf_counter() - started
    backends = "+".join(sorted(set(answer.get("encoded_by", {}).values()))) or "stored"
    encoding = f"query encoded in {answer['timing']['encode_ms']:.1f} ms by {backends}"
    if "filter" in answer:
        asked = ", ".join(
            f"{k}={v}" for k, v in answer["filter"].items() if k not in ("matching", "fewer_than_k")
        )
        how += f", among {answer['filter']['matching']} photos ({asked})"
    print(
        f"({len(answer['hits'])} hits by {answer['ranked_by']}, {how}, {encoding}, in {took:.1f} s)",
        file=sys.stderr,
    )
    return 0
