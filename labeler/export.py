"""`labeler export`: a project's labels as the data TRL trains on. Plain Python, no Flask app needed.

    from labeler.db import Database
    from labeler.export import export_project
    export_project(Database("sqlite:///labels.db"), "my-project", "exports/v1")

The folder it writes:

    preferences/        datasets.DatasetDict (train, test): prompt, chosen, rejected + provenance
    preferences.jsonl   the same rows with a `split` field (without labels_id and labels_hash: the hash covers them)
    sft/  sft.jsonl     prompt, completion (+ provenance, `source`: "top_ranked" or "edited")
    annotations.jsonl   every raw annotation of the project (ranking by response id, display order,
                        scores, rationale, edit, seconds, timestamps)
    export.json         filters, counts (kept and dropped, with reasons) and the content hash
    data/  README.md    the same splits as Parquet (data/<preferences|sft>/<split>-00000-of-00001.parquet)
                        and a dataset card whose `configs` name them: `datasets.load_dataset(folder)` opens
                        the preferences, `load_dataset(folder, "sft")` the SFT rows, from wherever it is
                        (a split without rows has no file: load_dataset cannot load an empty split)

Format: TRL's conversational one. `prompt` is a list of messages (a plain-string prompt becomes one
user message), `chosen`, `rejected` and `completion` are one assistant message each. Provenance
columns: task_id, prompt_id, chosen_response_id, rejected_response_id, annotation_ids and annotators
(the annotations that ranked both responses, and their usernames), agreement (the share of those
annotations whose ranking has the exported direction; a tie counts against), simulated (any of
them from a simulated annotator) and rank_gap (how many rank levels apart the agreeing rankings put the
two responses, averaged: 1 for neighbours; steps 3 and 4 below). The typed datasets (preferences/, sft/
and the Parquet files) also carry `labels_id` and `labels_hash` on every row: this export's id and content
hash, so a copy of the folder, or of one split, still says which labels it holds (rlhf's stages record
them in run.json and summary.json).

How labels become pairs, per task:
1. Filters first. `min_gold_accuracy` drops every annotation of an annotator whose gold accuracy
   (labeler.quality) is below it; an annotator with no gold task labeled has no accuracy and is
   dropped too, since a threshold asks for evidence. `min_agreement` then drops a task whose
   pairwise agreement among its remaining rankings is below it; a task with a single ranking has no
   measurable agreement and is dropped as well. Unset filters drop nothing.
2. An annotation flagged "all bad" gives no preference pairs (every response was bad, so "better"
   means nothing); the task's other annotations still vote.
3. Aggregation across annotators (labeler.aggregate has the details): "majority" keeps a pair in the
   direction with strictly more votes than the other direction and than ties (split votes and
   ties dropped); "bradley-terry" fits Bradley-Terry scores to the task's rankings and orders every
   pair by them (equal scores dropped). A pair's `rank_gap` is the mean, over the rankings that put its
   chosen above its rejected response (a majority pair's winning votes), of the rank levels between them
   (labeler.aggregate.rank_gap: ranks made dense, a tie group one level); 1.0 when no ranking does.
4. Edits: an annotator who writes an edited response says it is better than every response they
   ranked (or called all bad), so each edit gives one pair per such response, the edit chosen. Pairs
   carry `source`: "ranked" (from the aggregate of rankings) or "edited". The edit stands one level above
   its author's best, so an edit pair's `rank_gap` is the rejected response's dense rank in that ranking
   (1 against the author's top); an all-bad annotation ties every response, so its edit pairs have gap 1.
5. SFT: every annotator-edited response (an edit on an all-bad task is exactly the better answer the
   task lacked); for a task without edits, the top responses by the aggregate (most majority wins
   minus losses, or the highest Bradley-Terry score; responses tied on top each give a row, a task
   where every response ties gives none) when no annotation called the task all bad. A task's edits
   replace its top-ranked rows: the annotator fixed the best response because it was not good enough.

Split: a prompt goes to test iff int(sha256(prompt_hash)) / 2**256 < test_fraction, so a prompt
lands in the same split in every export, and SFT and preference data of one prompt share a split.
The content hash is the sha256 of the three JSONL files, which are written in a canonical order
(sorted keys and rows): the same labels and filters give the same hash, whenever exported.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from labeler.arena import arena_results, arena_votes
from labeler.audit import record_event
from labeler.aggregate import (aggregate_majority, bradley_terry, compare_ranks, dense_ranks, order_by_scores, pairwise_agreement,
                               rank_gap, sort_key_id)
from labeler.db import Database
from labeler.errors import LabelerError
from labeler.models import Export, Task, User, utcnow
from labeler.projects import find_project
from labeler.quality import gold_accuracy_by_user, load_annotations, str_keys
from labeler.schemas import ExportIn, parse

JSONL_FILES = ("preferences.jsonl", "sft.jsonl", "annotations.jsonl")


def split_for_prompt(prompt_hash: str, test_fraction: float) -> str:
    """'test' iff int(sha256(prompt_hash)) / 2**256 < test_fraction: stable across exports."""
    return "test" if int(hashlib.sha256(prompt_hash.encode()).hexdigest(), 16) / 2**256 < test_fraction else "train"


def to_messages(prompt) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise LabelerError(f"{out}: exists and is not a folder", field="out")
    if out.is_dir() and any(out.iterdir()):
        raise LabelerError(f"{out}: the export folder is not empty; choose a new folder", field="out")


def aggregate_task(rankings: list[dict], aggregation: str) -> tuple[list[dict], int, list[str]]:
    """(pairs as {chosen, rejected, voters: [index], agreement, rank_gap}, pairs dropped, top response ids)."""
    if aggregation == "majority":
        result = aggregate_majority(rankings)
        pairs = [{"chosen": p["chosen"], "rejected": p["rejected"], "voters": p["annotators"], "agreement": p["agreement"],
                  "rank_gap": rank_gap(rankings, p["chosen"], p["rejected"])} for p in result["pairs"]]
        wins: Counter = Counter({rid: 0 for ranking in rankings for rid in ranking})
        for p in pairs:  # Copeland score: majority wins minus losses
            wins[p["chosen"]] += 1
            wins[p["rejected"]] -= 1
        scores = {rid: float(v) for rid, v in wins.items()}
        return pairs, len(result["dropped"]), top_group(scores)
    scores = bradley_terry(rankings)
    kept, equal = order_by_scores(scores)
    pairs = []
    for chosen, rejected in kept:
        verdicts = [(i, compare_ranks(r, chosen, rejected)) for i, r in enumerate(rankings)]
        voters = [i for i, v in verdicts if v is not None]
        agree = sum(1 for _, v in verdicts if v == ">")
        pairs.append({"chosen": chosen, "rejected": rejected, "voters": voters, "agreement": agree / len(voters) if voters else 0.0,
                      "rank_gap": rank_gap(rankings, chosen, rejected)})
    return pairs, len(equal), top_group(scores)


def top_group(scores: dict[str, float]) -> list[str]:
    """The responses that share the best aggregate score; none when every response ties (no signal)."""
    if not scores:
        return []
    best = max(scores.values())
    top = sorted((rid for rid, v in scores.items() if best - v < 1e-6), key=sort_key_id)
    return [] if len(top) == len(scores) > 1 else top


def build_rows(session, project, aggregation, min_agreement, min_gold_accuracy, test_fraction):
    """Everything the export writes, as rows, plus the counts."""
    tasks = session.scalars(select(Task).where(Task.project_id == project.id).options(selectinload(Task.responses), selectinload(Task.prompt)).order_by(Task.id)).all()
    rows = load_annotations(session, project)
    gold = gold_accuracy_by_user(rows)
    by_task = defaultdict(list)
    for ann, task, user in rows:
        by_task[task.id].append((ann, user))
    dropped = {"annotations": Counter(), "tasks": Counter(), "pairs": Counter(), "sft": Counter()}
    prefs, sft = [], []
    tasks_used = annotations_used = 0

    for task in tasks:
        labels = by_task.get(task.id, [])
        if not labels:
            dropped["tasks"]["unlabeled"] += 1
            continue
        kept = []
        for ann, user in labels:
            accuracy = gold.get(user.id)
            if min_gold_accuracy is not None and accuracy is None:
                dropped["annotations"]["annotator_without_gold"] += 1
            elif min_gold_accuracy is not None and accuracy < min_gold_accuracy:
                dropped["annotations"]["below_gold_accuracy"] += 1
            else:
                kept.append((ann, user))
        if not kept:
            dropped["tasks"]["no_annotation_left"] += 1
            continue
        responses = {str(r.id): r for r in task.responses}
        ranked = [(ann, user, {k: v for k, v in str_keys(ann.ranking).items() if k in responses}) for ann, user in kept if not ann.all_bad]
        ranked = [(ann, user, r) for ann, user, r in ranked if len(r) >= 2]
        if min_agreement is not None:
            agreement = pairwise_agreement([[r for _, _, r in ranked]]) if len(ranked) >= 2 else None
            if agreement is None:
                dropped["tasks"]["agreement_unmeasured"] += 1
                continue
            if agreement < min_agreement:
                dropped["tasks"]["low_agreement"] += 1
                continue
        tasks_used += 1
        annotations_used += len(kept)
        prompt = to_messages(task.prompt.prompt)
        split = split_for_prompt(task.prompt.prompt_hash, test_fraction)
        base = {"prompt": prompt, "task_id": task.id, "prompt_id": task.prompt_id}
        any_all_bad = any(ann.all_bad for ann, _ in kept)

        top = None
        if ranked:
            pairs, n_dropped, top = aggregate_task([r for _, _, r in ranked], aggregation)
            dropped["pairs"]["no_majority" if aggregation == "majority" else "equal_scores"] += n_dropped
            for p in pairs:
                voters = [ranked[i] for i in p["voters"]]
                prefs.append(
                    base
                    | {
                        "chosen": assistant(responses[p["chosen"]].text),
                        "rejected": assistant(responses[p["rejected"]].text),
                        "chosen_response_id": int(p["chosen"]),
                        "rejected_response_id": int(p["rejected"]),
                        "annotation_ids": [ann.id for ann, _, _ in voters],
                        "annotators": [user.username for _, user, _ in voters],
                        "agreement": p["agreement"],
                        "rank_gap": p["rank_gap"],
                        "simulated": any(user.simulated for _, user, _ in voters),
                        "source": "ranked",
                        "split": split,
                    }
                )
        elif any_all_bad:
            dropped["pairs"]["all_bad_task"] += 1

        edits = [(ann, user) for ann, user in kept if ann.edited_response and ann.edited_response.strip()]
        for ann, user in edits:
            # The edit sits one level above the author's rank 1: its gap to a response is that response's dense
            # rank. "All bad" ranks every response level with the others, so each of those pairs has gap 1.
            if ann.all_bad:
                ranks = {rid: 1 for rid in responses}
            else:
                ranks = dense_ranks({rid: v for rid, v in str_keys(ann.ranking or {}).items() if rid in responses})
            for rid in sorted(ranks, key=sort_key_id):
                if responses[rid].text.strip() == ann.edited_response.strip():
                    continue  # an "edit" that changes nothing prefers nothing
                prefs.append(
                    base
                    | {
                        "chosen": assistant(ann.edited_response),
                        "rejected": assistant(responses[rid].text),
                        "chosen_response_id": None,
                        "rejected_response_id": int(rid),
                        "annotation_ids": [ann.id],
                        "annotators": [user.username],
                        "agreement": 1.0,
                        "rank_gap": float(ranks[rid]),
                        "simulated": bool(user.simulated),
                        "source": "edited",
                        "split": split,
                    }
                )

        if edits:
            dropped["sft"]["replaced_by_edit"] += len(top or [])
        elif any_all_bad:
            dropped["sft"]["all_bad"] += 1
        elif not top:
            dropped["sft"]["all_tied"] += 1
        for top_id in [] if any_all_bad or edits else top:
            sft.append(
                base
                | {
                    "completion": assistant(responses[top_id].text),
                    "response_id": int(top_id),
                    "annotation_ids": [ann.id for ann, _, _ in ranked],
                    "annotators": [user.username for _, user, _ in ranked],
                    "source": "top_ranked",
                    "simulated": any(user.simulated for _, user, _ in ranked),
                    "split": split,
                }
            )
        for ann, user in edits:
            sft.append(
                base
                | {
                    "completion": assistant(ann.edited_response),
                    "response_id": None,
                    "annotation_ids": [ann.id],
                    "annotators": [user.username],
                    "source": "edited",
                    "simulated": bool(user.simulated),
                    "split": split,
                }
            )

    raw = [
        {
            "id": ann.id,
            "task_id": task.id,
            "prompt_id": task.prompt_id,
            "is_gold": bool(task.is_gold),
            "user_id": user.id,
            "username": user.username,
            "simulated": bool(user.simulated),
            "ranking": dict(sorted(str_keys(ann.ranking).items(), key=lambda kv: sort_key_id(kv[0]))),
            "all_bad": bool(ann.all_bad),
            "display_order": list(ann.display_order or []),
            "scores": ann.scores or {},
            "rationale": ann.rationale or "",
            "edited_response": ann.edited_response,
            "seconds_spent": float(ann.seconds_spent or 0.0),
            "created_at": ann.created_at.isoformat() if ann.created_at else None,
            "updated_at": ann.updated_at.isoformat() if ann.updated_at else None,
        }
        for ann, task, user in rows
    ]
    counts = {
        "tasks": len(tasks),
        "tasks_used": tasks_used,
        "annotations": len(rows),
        "annotations_used": annotations_used,
        "pairs": {s: sum(1 for p in prefs if p["split"] == s) for s in ("train", "test")},
        "sft": {s: sum(1 for p in sft if p["split"] == s) for s in ("train", "test")},
        "pairs_by_source": {src: sum(1 for p in prefs if p["source"] == src) for src in ("ranked", "edited")},
        "sft_by_source": {src: sum(1 for p in sft if p["source"] == src) for src in ("top_ranked", "edited")},
        "dropped": {kind: {reason: n for reason, n in sorted(c.items()) if n} for kind, c in dropped.items()},
    }
    return prefs, sft, raw, counts


def dataset_features(kind: str):
    from datasets import Features, List, Value

    messages = List({"role": Value("string"), "content": Value("string")})
    common = {"prompt": messages, "task_id": Value("int64"), "prompt_id": Value("int64"), "annotation_ids": List(Value("int64")), "annotators": List(Value("string")), "simulated": Value("bool"),
              "labels_id": Value("int64"), "labels_hash": Value("string")}
    if kind == "preferences":
        return Features(common | {"chosen": messages, "rejected": messages, "chosen_response_id": Value("int64"), "rejected_response_id": Value("int64"), "agreement": Value("float64"), "rank_gap": Value("float64"), "source": Value("string")})
    return Features(common | {"completion": messages, "response_id": Value("int64"), "source": Value("string")})


def save_dataset(rows: list[dict], kind: str, path: Path, provenance: dict) -> None:
    """The rows as a typed DatasetDict (train, test), each row with `provenance` (labels_id, labels_hash)."""
    from datasets import Dataset, DatasetDict

    features = dataset_features(kind)
    parts = {}
    for split in ("train", "test"):
        records = [{k: (row | provenance)[k] for k in features} for row in rows if row["split"] == split]
        # from_list cannot build an empty dataset with a schema; from_dict can
        parts[split] = Dataset.from_list(records, features=features) if records else Dataset.from_dict({k: [] for k in features}, features=features)
    # one shard per split: datasets writes an empty split as zero shards, which load_from_disk cannot read
    DatasetDict(parts).save_to_disk(str(path), num_shards={split: 1 for split in parts})


PARQUET_CONFIGS = ("preferences", "sft")  # the first is load_dataset(folder)'s default


def parquet_path(kind: str, split: str) -> str:
    return f"data/{kind}/{split}-00000-of-00001.parquet"


def save_parquet(folder: Path) -> None:
    """Each split of the saved datasets (`folder`/preferences, `folder`/sft) as one Parquet file under data/;
    the features (message lists) travel in the files' schema, so load_dataset rebuilds the same columns."""
    from datasets import load_from_disk

    for kind in PARQUET_CONFIGS:
        for split, dataset in load_from_disk(str(folder / kind)).items():
            if len(dataset) == 0:
                continue  # load_dataset refuses a split without rows: an empty split gets no file
            target = folder / parquet_path(kind, split)
            target.parent.mkdir(parents=True, exist_ok=True)
            dataset.to_parquet(str(target))


def write_dataset_card(folder: Path, meta: dict) -> None:
    """README.md for `datasets.load_dataset(folder)`: huggingface_hub's DatasetCard with one config per
    Parquet dataset (preferences the default), and what the labels are and where they came from."""
    from huggingface_hub import DatasetCard, DatasetCardData

    counts = meta["counts"]
    configs = [{"config_name": kind, "data_files": files} for kind in PARQUET_CONFIGS
               if (files := [{"split": split, "path": parquet_path(kind, split)} for split in ("train", "test")
                             if (folder / parquet_path(kind, split)).is_file()])]
    if configs:
        configs[0]["default"] = True
    data = DatasetCardData(pretty_name=f"{meta['project']} labels (export {meta['id']})", task_categories=["text-generation"],
                           tags=["rlhf-loop", "preferences", "trl", "human-feedback"], configs=configs)
    body = [
        f"# {meta['project']}: labels, export {meta['id']}", "",
        f"Written by `labeler export` on {meta['created_at']}; content hash (sha256 of the JSONL files) "
        f"`{meta['content_hash']}`. Format: TRL's conversational one (message lists). Every row carries "
        f"`labels_id` ({meta['id']}) and `labels_hash` (the content hash): its provenance travels with it.", "",
        "```python", "from datasets import load_dataset", "",
        "preferences = load_dataset(\"path/to/this/folder\")          # prompt, chosen, rejected + provenance",
        "sft = load_dataset(\"path/to/this/folder\", \"sft\")           # prompt, completion + provenance", "```", "",
        "`load_dataset` caches by the folder's name and this card, not by the files: to load a second folder of the "
        "same name, pass `download_mode=\"force_redownload\"`.", "",
        "| config | train | test |", "|---|---|---|",
        f"| preferences | {counts['pairs']['train']} | {counts['pairs']['test']} |",
        f"| sft | {counts['sft']['train']} | {counts['sft']['test']} |", "",
        f"From {counts.get('annotations', '?')} annotations on {counts.get('tasks', '?')} tasks of project "
        f"`{meta['project']}`; filters: {json.dumps(meta['filters'], sort_keys=True)}. The same rows are in "
        "preferences/ and sft/ (`datasets.load_from_disk`) and in the JSONL files; export.json has every count.",
    ]
    DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n").save(folder / "README.md")


def write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def hash_content(folder: Path) -> str:
    h = hashlib.sha256()
    for name in JSONL_FILES:
        h.update(name.encode() + b"\0")
        h.update((folder / name).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def export_project(
    db: Database,
    project_name: str,
    out_dir,
    aggregation: str = "majority",
    min_agreement: float | None = None,
    min_gold_accuracy: float | None = None,
    test_fraction: float = 0.1,
    created_by: int | None = None,
) -> dict:
    """Write the export folder (see the module docstring) and record it; returns
    {"id", "content_hash", "counts", "filters", "path"}. The folder appears whole or not at all:
    it is built in a temporary folder beside `out_dir` and renamed into place."""
    filters = parse(ExportIn, {"aggregation": aggregation, "min_agreement": min_agreement,
                               "min_gold_accuracy": min_gold_accuracy, "test_fraction": test_fraction}).model_dump()
    aggregation, min_agreement = filters["aggregation"], filters["min_agreement"]
    min_gold_accuracy, test_fraction = filters["min_gold_accuracy"], filters["test_fraction"]
    out = Path(out_dir)
    check_out_dir(out)
    with db.read() as session:
        project = find_project(session, project_name)
        if created_by is not None and session.get(User, created_by) is None:
            raise LabelerError(f"created_by: no user with id {created_by}", field="created_by")
        prefs, sft, raw, counts = build_rows(session, project, aggregation, min_agreement, min_gold_accuracy, test_fraction)
        project_id, project_label = project.id, project.name
        votes = arena_votes(session, project) if project.kind == "arena" else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    placed = False
    try:
        write_jsonl(prefs, tmp / "preferences.jsonl")
        write_jsonl(sft, tmp / "sft.jsonl")
        write_jsonl(raw, tmp / "annotations.jsonl")
        if votes is not None:  # an arena: its votes and their win rates / Bradley-Terry scores travel too
            write_jsonl(votes, tmp / "votes.jsonl")
            (tmp / "arena.json").write_text(json.dumps(arena_results(votes), indent=2, sort_keys=True) + "\n")
            counts = dict(counts, votes=len(votes))
        content_hash = hash_content(tmp)
        # The row and the folder commit together: the row gets its id, the datasets and export.json record
        # it, the folder is renamed into place, and only then does the transaction commit. (The datasets are
        # written inside the transaction because their rows carry the id.)
        with db.write() as session:
            check_out_dir(out)  # another export may have taken the folder meanwhile
            row = Export(project_id=project_id, created_by=created_by, filters=filters, counts=counts, content_hash=content_hash, path=str(out.resolve()), created_at=utcnow())
            session.add(row)
            session.flush()
            export_id = row.id
            provenance = {"labels_id": export_id, "labels_hash": content_hash}
            save_dataset(prefs, "preferences", tmp / "preferences", provenance)
            save_dataset(sft, "sft", tmp / "sft", provenance)
            save_parquet(tmp)
            record_event(session, "export_created", session.get(User, created_by) if created_by is not None else None,
                         target=f"project {project_label}", detail={"export_id": export_id, "content_hash": content_hash, **filters})
            meta = {
                "id": export_id,
                "project": project_label,
                "project_id": project_id,
                "created_at": row.created_at.replace(tzinfo=dt.timezone.utc).isoformat(),
                "created_by": created_by,
                "format": "trl-conversational",
                "filters": filters,
                "counts": counts,
                "content_hash": content_hash,
                "files": {"preferences": "preferences", "sft": "sft", **{name.removesuffix(".jsonl") + "_jsonl": name for name in JSONL_FILES},
                          **({"votes_jsonl": "votes.jsonl", "arena": "arena.json"} if votes is not None else {})},
            }
            meta["files"].update({"parquet": "data", "card": "README.md"})
            write_dataset_card(tmp, meta)
            (tmp / "export.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            if out.is_dir():
                out.rmdir()  # empty (checked above); rename needs the name free
            os.rename(tmp, out)
            placed = True
    except BaseException:
        shutil.rmtree(out if placed else tmp, ignore_errors=True)
        raise
    return {"id": export_id, "content_hash": content_hash, "counts": counts, "filters": filters, "path": str(out.resolve())}


def zip_export(session, export_id: int):
    """The export folder of Export row `export_id` as an in-memory zip (for the API and the admin page)."""
    import io
    import zipfile

    row = session.get(Export, export_id)
    if row is None:
        raise LabelerError(f"field 'export_id': export {export_id} not found", status=404, field="export_id")
    folder = Path(row.path)
    if not folder.is_dir():
        raise LabelerError(f"export {export_id}: its files at {folder} are gone", status=410, field="export_id")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder))
    buffer.seek(0)
    return buffer


def load_export(path) -> dict:
    """The paths of an export folder's parts (for `rlhf`), plus its export.json as "meta"."""
    folder = Path(path)
    meta_path = folder / "export.json"
    if not meta_path.is_file():
        raise LabelerError(f"{folder}: not a labeler export (no export.json)", field="path")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LabelerError(f"{meta_path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    parts = {key: folder / name for key, name in meta.get("files", {}).items()}
    missing = [str(p) for p in parts.values() if not p.exists()]
    if missing:
        raise LabelerError(f"{folder}: export is incomplete, missing {', '.join(missing)}", field="path")
    return parts | {"meta": meta}


def new_export_dir(project_name: str) -> Path:
    """A fresh folder name under the app's EXPORT_DIR for an export made from the web page or the API."""
    import secrets

    from flask import current_app

    root = Path(current_app.config.get("EXPORT_DIR") or Path(current_app.instance_path) / "exports")
    return root / f"{project_name}-{utcnow():%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
