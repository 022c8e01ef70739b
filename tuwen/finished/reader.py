"""A finished run, read from its record: what it declared, its channels and their cards, each
collection's files, how each task ranks, and its indexes. The server, the export and the
command line build on this one reader, and it gives only a complete, consistent state
(tuwen.finished.record): a run being rerun is not read until the rerun has finished.

A task's top-k table names the model that ranked it (`model_tag` in its metadata) and the
fusion recipe, if one ranked. A gallery no task searches is ranked by the run's first
model's ranking stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tuwen.finished.record import RunNotFinished, check_stamps, not_finished, read_record
from tuwen.ranking.scoring import FusionRecipe, QueryBank, Ranking, read_bank
from tuwen.run.channels import TEXT, channel_source
from tuwen.run.declaration import Run


@dataclass(frozen=True)
class Channel:
    """A channel of the run: one CLIP model at one stage, or a sentence encoder, and its card."""

    name: str  # clip:<model> or clip:<model>:<stage>; text:<encoder>
    model: str  # the model's architecture name, or the sentence encoder's name
    tag: str
    card: Path
    resolution: int  # a CLIP model's input size; 0 for a sentence encoder
    weights_dir: str = ""  # where a sentence encoder found its weights ("" = inside its package)

    @property
    def sentence(self) -> bool:
        """Whether this is a `text:<encoder>` channel: captions and images' text by meaning."""
        return channel_source(self.name) == TEXT


@dataclass(frozen=True)
class CollectionFiles:
    """A collection's files: manifest, shard assignment, feature shards per channel, OCR shards."""

    name: str
    kind: str
    manifest: Path
    assignment: Path
    features: dict[str, list[Path]] = field(default_factory=dict)
    ocr: list[Path] = field(default_factory=list)
    duplicates: Path | None = None  # its groups of exact and near copies, where they are found
    tags: Path | None = None  # its photos' zero-shot tags, where the run tags them


@dataclass(frozen=True)
class FinishedRun:
    """A finished run's complete state, as its record names it (paths under `folder`)."""

    folder: Path
    declared: Run
    channels: dict[str, Channel]
    collections: dict[str, CollectionFiles]
    rankings: dict[str, Ranking]  # each task's, as its result table ranks
    default_channel: str  # what ranks any other pairing: the first model's ranking stage
    indexes: dict[str, Path]  # each indexed gallery's description (index.json)
    settings: dict[str, Path]  # the settings a query is read with (ingest; ocr)
    stamp: list[int]  # the record's own, which changes when a rerun finishes
    record: dict = field(repr=False, default_factory=dict)
    towers: dict[str, Path] = field(default_factory=dict)  # a CLIP channel's exported towers.json

    def check(self) -> None:
        """Check that the run still holds this state (nothing rewritten since it was read)."""
        check_stamps(self.folder, self.record)

    def channel_of(self, gallery: str) -> str:
        """Give the channel that ranks a gallery's default queries: its task's, or the run's."""
        task = next((n for n, t in self.declared.tasks.items() if t.gallery == gallery), None)
        return self.rankings[task].channel if task else self.default_channel

    def default_gallery(self, query_kind: str) -> str:
        """Give the collection a query of `query_kind` searches by default (Run.default_gallery)."""
        gallery = self.declared.default_gallery(query_kind)
        if gallery is None:
            raise RunNotFinished(f"{self.folder}: the run has no collection to search")
        return gallery

    def setting(self, group: str) -> dict:
        """Give a settings group the run was made with (results/settings/<group>.json)."""
        return json.loads(self.settings[group].read_text(encoding="utf-8"))


def read_finished(folder: str | Path) -> FinishedRun:
    """Give the finished run in `folder`; RunNotFinished when it has none, or is being rerun."""
    folder = Path(folder)
    record, stamp = read_record(folder)
    plan = record["plan"]
    declared = Run.from_dict(json.loads((folder / plan["run"]).read_text(encoding="utf-8"))["run"])
    channels = _read_channels(folder, plan["cards"])
    collections = {
        name: CollectionFiles(
            name,
            files["kind"],
            folder / files["manifest"],
            folder / files["assignment"],
            {channel: [folder / path for path in paths] for channel, paths in files["features"].items()},
            [folder / path for path in files["ocr"]],
            folder / files["duplicates"] if files.get("duplicates") else None,
            folder / files["tags"] if files.get("tags") else None,
        )
        for name, files in plan["collections"].items()
    }
    chosen = plan["chosen"]
    rankings = _read_rankings(folder, plan["tasks"], channels, bool(chosen))
    ranking = declared.ranking_model
    default = next(iter(rankings.values())).channel if rankings else ranking.channel(ranking.ranking_stage)
    if default not in channels:
        raise not_finished(folder, f"its ranking channel {default} has no card")
    return FinishedRun(
        folder,
        declared,
        channels,
        collections,
        rankings,
        default,
        {name: folder / path for name, path in plan["indexes"].items()},
        {group: folder / path for group, path in plan["settings"].items()},
        stamp,
        record,
        {name: folder / files["description"] for name, files in plan.get("towers", {}).items()},
    )


def _read_channels(folder: Path, cards: dict[str, str]) -> dict[str, Channel]:
    channels = {}
    for name, path in cards.items():
        card = json.loads((folder / path).read_text(encoding="utf-8"))
        model = card["name"]
        channels[name] = Channel(
            name, model, card["tag"], folder / path, card.get("resolution", 0), card.get("weights_dir", "")
        )
    return channels


def _read_rankings(
    folder: Path, tasks: dict, channels: dict[str, Channel], fused: bool
) -> dict[str, Ranking]:
    """Give each task's ranking from its table's metadata (model, fusion recipe) and, when the
    recipe re-ranks, the query bank the table was ranked with."""
    from tuwen.files.parquet import read_metadata

    by_tag = {c.tag: name for name, c in channels.items()}
    rankings = {}
    for task, files in tasks.items():
        path = folder / files["topk"]
        metadata = read_metadata(path)
        if metadata["model_tag"] not in by_tag:
            raise not_finished(
                folder, f"{files['topk']} was ranked by {metadata['model_tag']}, which has no card"
            )
        recipe = FusionRecipe.from_dict(json.loads(metadata["fusion"])) if metadata.get("fusion") else None
        bank = None
        if fused and recipe is not None and recipe.temperature and "query_bank" in files:
            bank = _read_bank(folder / files["query_bank"], recipe.temperature)
        rankings[task] = Ranking(by_tag[metadata["model_tag"]], recipe, bank)
    return rankings


def _read_bank(path: Path, temperature: float) -> QueryBank | None:
    bank = read_bank(path, temperature)
    return bank if len(bank.ids) else None
