"""The house: library calls behind thin commands, torch-free catalog commands, errors that name parameters."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from featx.errors import ParameterError, StoreBusyError, StoreError
from featx.runtimes import TorchRuntime

from conftest import run_cli, write_class_folder


def _imports_torch(code: str) -> bool:
    """Whether running ``code`` in a fresh interpreter leaves torch imported."""
    probe = f"import sys\n{code}\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


def test_the_store_and_catalog_commands_never_import_torch(digits_head_cache):
    assert not _imports_torch("import featx.store; featx.store.FeatureStore; featx.store.describe_stores")
    cli = "from featx.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass"
    assert not _imports_torch(cli.format(args=["--help"]))
    assert not _imports_torch(cli.format(args=["stores", "--cache", str(digits_head_cache)]))
    # …while the probe can tell: embedding does import it.
    assert _imports_torch("import featx.runtimes; featx.runtimes.TorchRuntime")


def test_the_ranking_comparing_and_auditing_modules_never_import_torch():
    """Naming a type (a Backbone) must not pull torch in: rank, compare and audit import it only to embed."""
    assert not _imports_torch("import featx.rank.runner, featx.rank.groups, featx.transfer.compare, featx.audit.runner")


def _imports_within_packages() -> dict[str, set[str]]:
    """module → the modules of its own package it imports (at run time: ``if TYPE_CHECKING`` blocks left out)."""
    import ast
    from pathlib import Path

    import featx

    root = Path(featx.__file__).parent
    modules = {".".join(p.relative_to(root).with_suffix("").parts): p for p in root.rglob("*.py")}
    modules = {k.removesuffix(".__init__"): v for k, v in modules.items()}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in
                   ast.unparse(node.test) for n in ast.walk(node)}
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in skipped:
                base = ".".join(filter(None, [package, node.module]))
                for alias in node.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    if target in modules and target != name and target.rpartition(".")[0] == package:
                        found.add(target)
        edges[name] = found
    return edges


def test_no_module_imports_one_that_imports_it_back():
    """Within each sub-package, imports run one way (a module and its importer never need each other)."""
    edges = _imports_within_packages()
    assert sum(len(v) for v in edges.values()) > 30  # the walk sees the package's imports

    def cycle_from(start, node, path):
        for nxt in edges.get(node, ()):
            if nxt == start:
                return path + [nxt]
            if nxt not in path:
                found = cycle_from(start, nxt, path + [nxt])
                if found:
                    return found
        return None

    cycles = [c for m in sorted(edges) if (c := cycle_from(m, m, [m]))]
    assert cycles == []


def test_every_derived_files_path_comes_from_store_paths():
    """Heads, indexes, maps, thumbnails and the audit, rank, compare and fine-tuning folders: one module says where
    each lives (``/ "audit"`` written anywhere else would let the service and the audit disagree)."""
    import ast
    from pathlib import Path

    import featx

    root = Path(featx.__file__).parent
    folders = {"heads", "indexes", "maps", "thumbnails", "audit", "rank", "compare", "finetuned"}
    built = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                    and node.right.value in folders):
                built.append(f"{path.relative_to(root)}:{node.lineno}")
    assert built and all(b.startswith("store/paths.py") for b in built), built


def _library_messages():
    """(file:line, text) of every string literal in a ``raise`` of the library (not the CLI and service skins)."""
    import ast
    from pathlib import Path

    import featx

    root = Path(featx.__file__).parent
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in ("cli", "serve"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                for part in ast.walk(node.exc):
                    if isinstance(part, ast.Constant) and isinstance(part.value, str):
                        yield f"{path.relative_to(root)}:{node.lineno}", part.value


def test_library_errors_name_parameters_never_command_line_flags():
    """The library speaks Python (``max_memory=``); the CLI writes the parameters an error names as its flags."""
    import re

    messages = list(_library_messages())
    assert len(messages) > 100  # the walk finds the library's errors
    flags = [(where, text) for where, text in messages if re.search(r"(^|[\s(`'\"])--[a-z]", text)]
    assert flags == []


def test_describe_stores_is_what_featx_stores_prints(digits_head_cache):
    from featx.store import describe_stores

    (summary,) = describe_stores(digits_head_cache)
    assert summary["backbone"] == "efficientnet_lite0" and summary["image_size"] == summary["input_size"] == 32
    (digits,) = summary["datasets"]
    assert digits["name"] == "digits" and digits["n"] == 1797 and sum(digits["splits"].values()) == 1797
    assert summary["n_vectors"] == 1797 and summary["bytes"] > 1797 * 1280 * 4
    printed = json.loads(run_cli("stores", "--cache", digits_head_cache, "--json").output)
    assert printed == json.loads(json.dumps([summary]))


def test_finetune_source_runs_the_whole_workflow_from_the_library(tmp_path):
    from featx.config import Recipe
    from featx.data import open_source
    from featx.transfer import FinetuneSettings, finetune_source, load_checkpoint

    result = finetune_source(open_source("digits"), Recipe(image_size=32), shots=2, cache=tmp_path,
                             settings=FinetuneSettings(epochs=1, min_steps_per_epoch=1))
    assert result.n_train + result.n_val == 20 and result.n_test > 300 and 0.0 <= result.accuracy <= 1.0
    assert result.path == str(tmp_path / "finetuned" / "digits-efficientnet_lite0-last-1-2shot-seed0.pt")
    assert load_checkpoint(result.path)["featx"]["classes"] == [str(i) for i in range(10)]
    with pytest.raises(ParameterError, match="shots must be at least 1"):
        finetune_source(open_source("digits"), shots=0, cache=tmp_path)


def test_help_of_every_command_explains_itself_with_an_example():
    import click

    from featx.cli import main

    names = main.list_commands(click.Context(main))
    assert len(names) == 17
    for name in names:
        out = run_cli(name, "--help").stdout
        assert "Example" in out and f"featx {name}" in out.split("Example", 1)[1], name
    top = run_cli("--help").stdout
    assert all(name in top for name in names) and "FEATX_CACHE" in top


def test_backbones_table_lists_the_registry():
    from featx.backbones import describe_backbones

    lines = run_cli("backbones").stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "dim", "size", "offline"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    for r in describe_backbones():
        assert r["name"] in rows
    assert rows["efficientnet_lite0"][1:4] == ["1280", "224", "yes"]
    assert rows["timm:NAME"][1:4] == ["-", "-", "no"]


def test_errors_name_parameters_for_python_and_flags_for_the_command_line(tmp_path, lite0_small):
    from featx.embed import embed_source
    from featx.data import open_source
    from featx.store import open_store

    folder = write_class_folder(tmp_path / "c", per_class=2)
    with open_store(lite0_small.config, tmp_path / "cache") as store:
        with pytest.raises(ParameterError, match="^batch_size must be at least 1"):
            embed_source(open_source(str(folder)), lite0_small, store, batch_size=0)
    result = run_cli("embed", folder, "--batch-size", 0, "--cache", tmp_path / "cache", ok=False)
    assert result.exit_code == 1 and result.output.startswith("Error: --batch-size must be at least 1")


def test_create_app_refuses_bad_limits_with_a_featx_error(lite0_small):
    from featx.serve import Resources, create_app

    with pytest.raises(ParameterError, match="max_batch must be at least 1"):
        create_app(Resources(runtime=TorchRuntime(lite0_small)), max_batch=0)


def test_embed_files_falls_back_only_when_the_store_is_busy(tmp_path, lite0_small):
    from featx.embed import embed_files
    from featx.store import open_store

    folder = write_class_folder(tmp_path / "c", per_class=2)
    with open_store(lite0_small.config, tmp_path / "cache") as store:
        with store.writing():  # another writer holds the lock: vectors come uncached
            X, found, bad = embed_files([str(folder)], lite0_small, store)
            assert X.shape == (4, lite0_small.dim) and not bad and store.n_vectors() == 0
            with pytest.raises(StoreBusyError):
                with store.writing():
                    pass
        X2, _, _ = embed_files([str(folder)], lite0_small, store)  # free: cached
        assert store.n_vectors() == 4
        np.testing.assert_allclose(X, X2, atol=1e-2)

    class WrongDim:  # a store whose vectors cannot take this backbone's: an error, never a silent fallback
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def add(self, keys, X):
            raise StoreError("expected vectors of dimension 7")

    folder2 = write_class_folder(tmp_path / "d", per_class=1, classes={"g": (10, 200, 10)})
    with open_store(lite0_small.config, tmp_path / "cache") as store:
        with pytest.raises(StoreError, match="dimension 7"):
            embed_files([str(folder2)], lite0_small, WrongDim(store))


def test_the_library_reads_no_environment_variable(tmp_path, monkeypatch, digits_head_cache):
    from featx.store import list_stores

    monkeypatch.setenv("FEATX_CACHE", str(digits_head_cache))
    monkeypatch.chdir(tmp_path)
    assert list_stores() == []  # ./cache, whatever the environment says
    assert len(list_stores(digits_head_cache)) == 1
    assert "digits" in run_cli("stores").output  # the command line reads FEATX_CACHE


def test_a_run_resumes_only_from_a_report_of_its_own_kind_and_settings(tmp_path):
    """rank and compare resume through one helper: a missing, unreadable, other-format or other-settings
    report.json is never reused."""
    from featx.reporting import previous_report, write_json

    report = {"format": "featx-x-1", "settings": {"seed": 0}, "runs": [1]}
    key = lambda r: json.dumps(r["settings"], sort_keys=True)  # noqa: E731
    assert previous_report(tmp_path, report, key) is None  # nothing there
    (tmp_path / "report.json").write_text("{half a report")
    assert previous_report(tmp_path, report, key) is None
    for other in ({**report, "format": "featx-y-1"}, {**report, "settings": {"seed": 1}}, {"format": "featx-x-1"}, [1]):
        (tmp_path / "report.json").write_text(json.dumps(other))
        assert previous_report(tmp_path, report, key) is None
    write_json(report, tmp_path)
    assert previous_report(tmp_path, {**report, "runs": []}, key) == report
