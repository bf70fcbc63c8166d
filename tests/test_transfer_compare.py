"""`featx compare`: every method gets the same subsets, the report's structure, failures, resuming, bad input."""

from __future__ import annotations

import json

import pytest

from featx.transfer import compare

from conftest import run_cli, write_class_folder

TINY = 32


@pytest.fixture
def spied(monkeypatch):
    """Wrap every method so the test sees exactly which samples each run was given."""
    calls = []
    for name, run in list(compare.METHODS.items()):
        def spy(exp, train, seed, _name=name, _run=run):
            calls.append({"method": _name, "seed": seed, "shots": min(train.class_counts().values()),
                          "keys": sorted(train.keys), "test": list(exp.test.keys)})
            return _run(exp, train, seed)

        monkeypatch.setitem(compare.METHODS, name, spy)
    return calls


def test_tiny_compare_on_digits(tmp_path, cache, spied):
    out = tmp_path / "report"
    run_cli("compare", "digits", "--shots", "1,3", "--seeds", 2, "--methods", "logreg,logreg-stages,knn,finetune-last",
            "--image-size", TINY, "--epochs", 1, "--batch-size", 16, "--out", out)

    # Every method received the same subset for each (shots, seed), and the same test split.
    assert len(spied) == 2 * 2 * 4
    by_draw = {}
    for call in spied:
        by_draw.setdefault((call["shots"], call["seed"]), []).append(call)
    assert len(by_draw) == 4
    for (shots, _), calls in by_draw.items():
        assert {c["method"] for c in calls} == {"logreg", "logreg-stages", "knn", "finetune-last"}
        assert all(c["keys"] == calls[0]["keys"] for c in calls)
        assert len(calls[0]["keys"]) == shots * 10
    assert by_draw[(3, 0)][0]["keys"] != by_draw[(3, 1)][0]["keys"]
    assert len({tuple(c["test"]) for c in spied}) == 1

    report = json.loads((out / "report.json").read_text())
    assert report["complete"] and report["image_size"] == TINY and report["n_test"] == len(spied[0]["test"])
    assert report["embedding"]["n_images"] == 1797 and report["embedding"]["seconds"] > 0
    assert len(report["runs"]) == 16
    # One stages store serves both frozen logreg arms; the built-in digits are full-frame.
    assert report["layers"][-1] == "final" and len(report["layers"]) > 1 and report["crop"] == "full"
    for run in report["runs"]:
        assert run["status"] == "ok", run
        assert sorted(report["subsets"][f"{run['shots']}/{run['seed']}"]["keys"]) == \
            by_draw[(run["shots"], run["seed"])][0]["keys"]
        for key in ("accuracy", "macro_f1", "seconds", "peak_rss_mb", "train_accuracy"):
            assert run[key] is not None, key
        assert 0.0 <= run["accuracy"] <= 1.0
    md = (out / "report.md").read_text()
    assert "| shots/class | logreg | logreg-stages | knn | finetune-last |" in md
    assert "## Test accuracy (%), mean ± std over seeds" in md and "Embedding (1,797 images" in md
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Run again with the same budget: every run is reused, nothing retrains.
    spied.clear()
    run_cli("compare", "digits", "--shots", "1,3", "--seeds", 2, "--methods", "logreg,logreg-stages,knn,finetune-last",
            "--image-size", TINY, "--epochs", 1, "--batch-size", 16, "--out", out)
    assert spied == []
    assert json.loads((out / "report.json").read_text())["runs"] == report["runs"]


def test_a_failing_run_is_recorded_and_the_rest_go_on(tmp_path, cache, monkeypatch):
    def out_of_memory(exp, train, seed):
        raise MemoryError("cannot allocate 12 GB")

    monkeypatch.setitem(compare.METHODS, "finetune-all", out_of_memory)
    out = tmp_path / "report"
    run_cli("compare", "digits", "--shots", "2", "--seeds", 1, "--methods", "logreg,finetune-all",
            "--image-size", TINY, "--out", out)
    runs = {r["method"]: r for r in json.loads((out / "report.json").read_text())["runs"]}
    assert runs["logreg"]["status"] == "ok"
    assert runs["finetune-all"] == {**runs["finetune-all"], "status": "failed",
                                    "reason": "MemoryError: cannot allocate 12 GB"}
    md = (out / "report.md").read_text()
    assert "finetune-all, 2 shots, seed 0: MemoryError: cannot allocate 12 GB" in md and "| 2 |" in md


@pytest.mark.parametrize("args, message", [
    (["--methods", "logreg,svm"], "unknown method 'svm'; choose from logreg, ridge, linear-svm, knn, mlp, logreg-stages"),
    (["--shots", "1,x"], "--shots must be comma-separated whole numbers"),
    (["--shots", "0,5"], "--shots must be positive"),
    (["--shots", "1000"], "--shots 1000 is more than the smallest class has"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--methods", "logreg-stages,logreg-grid"], "--methods compares -stages and -grid methods in separate runs"),
])
def test_bad_input_names_the_fix(args, message, tmp_path, cache):
    result = run_cli("compare", "digits", "--image-size", TINY, "--out", tmp_path / "r", *args, ok=False)
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_grid_arms_read_a_grid_store_whose_final_columns_serve_the_plain_arm(tmp_path, cache):
    out = tmp_path / "report"
    run_cli("compare", "digits", "--shots", "3", "--seeds", 1, "--methods", "logreg,logreg-grid",
            "--image-size", TINY, "--out", out)
    report = json.loads((out / "report.json").read_text())
    assert report["layers"][-1] == "final" and all(n.endswith("@2x2") for n in report["layers"][:-1])
    runs = {r["method"]: r for r in report["runs"]}
    assert runs["logreg"]["status"] == runs["logreg-grid"]["status"] == "ok"
    assert runs["logreg"]["accuracy"] != runs["logreg-grid"]["accuracy"]  # the columns differ
    assert "| shots/class | logreg | logreg-grid |" in (out / "report.md").read_text()


def test_a_dataset_without_a_test_split_is_refused(tmp_path, cache):
    write_class_folder(tmp_path / "data" / "train", per_class=3)
    result = run_cli("compare", tmp_path / "data", "--image-size", TINY, "--shots", 1, "--out", tmp_path / "r",
                     ok=False)
    assert result.exit_code == 1 and "has no labelled test split" in result.output, result.output


def test_the_command_line_default_methods_are_the_librarys():
    from featx.cli.transfer import DEFAULT_METHODS_TEXT

    assert DEFAULT_METHODS_TEXT == ",".join(compare.DEFAULT_METHODS)
    assert DEFAULT_METHODS_TEXT in run_cli("compare", "--help").output.replace("\n", "").replace(" ", "")
