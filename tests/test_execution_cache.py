"""labkit.app.execution_cache and the runner's reuse of earlier executions, on a tiny engine-free project made in a
temp folder: its own `labkit` tree (an instrument, a lab, a notebook that prints the lab's answer), the kernel
importing that tree (PYTHONPATH), the catalogue and the base recipes monkeypatched, the host given.

Known answers: the notebook prints 2 × 21 = 42 (3 × 21 = 63 once the instrument triples); each kind of input change
re-executes it and names that input; nothing else does; --fresh, quick mode and a failure never reuse."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest

from labkit.app import bench, book, catalog, cli, execution_cache, runner
from labkit.core import session
from labkit.core.lab import Lab
from labkit.instruments import images
from labkit.instruments.shell import run
from labkit.labs import tags_digests_and_registries

ROOT = Path(__file__).resolve().parent.parent

STEM = "01-tiny"
NOTEBOOK = f"notebooks/{STEM}.ipynb"
LAB = "labkit/labs/tiny.py"
INSTRUMENT = "labkit/instruments/arithmetic.py"
DOUBLE = "def times(x: int) -> int:\n    return 2 * x\n"
TRIPLE = "def times(x: int) -> int:\n    return 3 * x\n"
# The lab publishes what a session's finish() would: a results folder whose provenance names the run.
TINY_LAB = '''\
import json
import os
from pathlib import Path

from labkit.instruments import arithmetic


def answer() -> int:
    return arithmetic.times(21)


def publish() -> None:
    folder = Path(os.environ["LABKIT_RESULTS_DIR"]) / "01-tiny"
    folder.mkdir(parents=True, exist_ok=True)
    provenance = {"run_id": os.environ["LABKIT_RUN_ID"], "started_utc": "2026-12-05T04:00:00+00:00",
                  "ended_utc": "2026-12-05T04:00:01+00:00"}
    (folder / "provenance.json").write_text(json.dumps(provenance))
'''


def _write_notebook(path: Path, *code: str) -> None:
    cells = [nbformat.v4.new_markdown_cell("# 01 · A tiny notebook"),
             nbformat.v4.new_code_cell('quick: bool = False\nmode: str = "auto"', metadata={"tags": ["parameters"]}),
             *(nbformat.v4.new_code_cell(source) for source in code)]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), path)


class Project:
    """The temp project and the inputs a test changes: base recipe, host fingerprint, labkit version."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base_version = "1"
        self.fingerprint: dict[str, Any] = {"kernel": "6.1.0", "cores": 2}
        self.labkit_version = "0.1.0"
        files = {"labkit/__init__.py": "", "labkit/instruments/__init__.py": "", INSTRUMENT: DOUBLE,
                 "labkit/instruments/unused.py": "UNUSED = 1\n", "labkit/labs/__init__.py": "", LAB: TINY_LAB}
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        (root / "notebooks").mkdir()
        _write_notebook(self.notebook, "from labkit.labs import tiny\nprint(tiny.answer())\ntiny.publish()")

    @property
    def notebook(self) -> Path:
        return self.root / NOTEBOOK

    @property
    def executed(self) -> Path:
        return self.root / "build" / "notebooks" / f"{STEM}.ipynb"

    @property
    def results(self) -> Path:
        return self.root / "build" / "results"

    def run(self, *, quick: bool = False, fresh: str = "") -> runner.NotebookRun:
        """`labkit run` as `make lab` calls it (full, live, reuse allowed unless `fresh`), or with `quick` as
        `make test` does (into the runner's default folders); its one notebook."""
        output, results = (None, None) if quick else (self.executed.parent, self.results)
        [done] = runner.execute([self.notebook], quick=quick, mode="live", fresh=fresh, output_dir=output,
                                results_dir=results)
        return done

    def printed(self) -> str:
        cells = nbformat.read(self.executed, as_version=4).cells
        return "".join(o.text for c in cells for o in c.get("outputs", []) if o.output_type == "stream").strip()

    def provenance(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.results / STEM / "provenance.json").read_text())
        return data


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    made = Project(tmp_path)
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    # The runner's end undoes orphaned host changes: here only the tiny project's own (none), never those of a
    # labkit command running beside the tests.
    monkeypatch.setenv("LABKIT_STATE", str(tmp_path / "state"))
    monkeypatch.delenv("LABKIT_RESULTS_DIR", raising=False)  # the runner's own folders, as on a reader's machine
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the kernel imports the tiny project's labkit
    monkeypatch.setattr(runner, "sweep_run", lambda run_id: None)  # nothing of an engine's to sweep
    tiny = Lab(STEM, "A tiny notebook", requirements=(), bases=("tiny-base",), tables={})
    monkeypatch.setattr(catalog, "all_labs", lambda: [tiny])
    monkeypatch.setattr(images, "recipe", lambda name: images.Recipe(name, "a stand-in base",
                                                                     (("version", made.base_version),)))
    monkeypatch.setattr(execution_cache.Host, "current",
                        classmethod(lambda cls: cls(made.labkit_version, dict(made.fingerprint))))
    return made


def _a_lab_that_does_not_import() -> list[Lab]:
    raise ImportError("broken lab")


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def test_each_kind_of_input_change_executes_again_and_nothing_else_does(project: Project) -> None:
    first = project.run()
    assert (first.status, first.reason) == ("ok", "no finished earlier execution to reuse")
    assert project.printed() == "42"
    # The key, its inputs and the reason are in the provenance and in the executed copy.
    recorded = project.provenance()["execution"]
    assert (recorded["key"], recorded["reason"]) == (first.key, first.reason)
    assert nbformat.read(project.executed, as_version=4).metadata["labkit"]["execution"]["key"] == first.key
    assert set(recorded["inputs"]) == {
        f"notebook {NOTEBOOK}", "labkit labkit/__init__.py", "lab labkit/labs/__init__.py", f"lab {LAB}",
        "instrument labkit/instruments/__init__.py", f"instrument {INSTRUMENT}", "labkit version",
        "base tiny-base", "host fingerprint", "mode"}
    first_run = recorded["run_id"]

    again = project.run()
    assert (again.status, again.key) == ("reused", first.key)
    assert again.reason == (f"inputs unchanged since run {first_run}, measured 2026-12-05T04:00:00+00:00 → "
                            "2026-12-05T04:00:01+00:00")
    (project.root / "labkit/instruments/unused.py").write_text("UNUSED = 2\n")  # imported by nothing
    assert project.run().status == "reused"

    changes = [
        (lambda: _write_notebook(project.notebook, "from labkit.labs import tiny\nprint(tiny.answer())",
                                 "tiny.publish()"), f"notebook {NOTEBOOK} changed"),
        (lambda: _edit(project.root / LAB, "return arithmetic", "return  arithmetic"), f"lab {LAB} changed"),
        (lambda: (project.root / INSTRUMENT).write_text(TRIPLE), f"instrument {INSTRUMENT} changed"),
        (lambda: setattr(project, "base_version", "2"), "base tiny-base changed"),
        (lambda: project.fingerprint.update(cores=4), "host fingerprint changed"),
        (lambda: setattr(project, "labkit_version", "0.2.0"), "labkit version changed (0.1.0 → 0.2.0)"),
    ]
    for change, reason in changes:
        change()
        executed = project.run()
        assert (executed.status, executed.reason) == ("ok", reason)
        assert project.provenance()["execution"]["reason"] == reason
        assert project.run().status == "reused"  # and once executed, reused again
    assert project.printed() == "63"  # the tripling instrument ran: 3 × 21


def test_the_bench_times_a_second_run_and_counts_what_it_reused(project: Project) -> None:
    """`make bench`'s warm notebook phase runs the notebooks again into the full run's folders: reused while
    nothing changed, and said so when an input did."""
    assert project.run().status == "ok"
    measured = bench.Bench()
    bench.warm_notebooks(measured, [project.notebook], project.root / "build")
    (project.root / INSTRUMENT).write_text(TRIPLE)
    bench.warm_notebooks(measured, [project.notebook], project.root / "build")
    rows = measured.frame()
    assert list(rows["note"]) == ["1 of 1 notebooks reused", f"0 of 1 notebooks reused; executed again: {STEM}"]
    assert list(rows["condition"]) == ["warm", "warm"] and (rows["value"] > 0).all()
    assert project.printed() == "63"


def test_an_asset_is_an_input_only_where_the_code_names_its_folder(project: Project) -> None:
    """A notebook whose lab reads assets/tiny/answer.txt: that file and its own claims' words are inputs; another
    lab's asset folder and another notebook's claims are not, so editing them executes nothing again."""
    files = {"labkit/assets/__init__.py": "", "labkit/assets/tiny/answer.txt": "21\n",
             "labkit/assets/other/Dockerfile": "FROM scratch\n", f"labkit/assets/claims/{STEM}.toml": "",
             "labkit/assets/claims/02-other.toml": "", "labkit/core/__init__.py": "",
             "labkit/core/claims.py": "FOLDER = 'claims'  # as labkit.core.claims names its folder\n"}
    for name, text in files.items():
        (project.root / name).parent.mkdir(parents=True, exist_ok=True)
        (project.root / name).write_text(text)
    _edit(project.root / LAB, "def answer() -> int:\n    return arithmetic.times(21)",
          "import labkit.assets\nimport labkit.core.claims\n\nANSWER = 'tiny/answer.txt'\n\n\ndef answer() -> int:\n"
          "    return arithmetic.times(int((Path(labkit.assets.__file__).parent / ANSWER).read_text()))")
    first = project.run()
    assert (first.status, project.printed()) == ("ok", "42")
    assets = {name for name in project.provenance()["execution"]["inputs"] if name.startswith("asset ")}
    assert assets == {"asset labkit/assets/__init__.py", "asset labkit/assets/tiny/answer.txt",
                      f"asset labkit/assets/claims/{STEM}.toml"}
    for name in ("labkit/assets/other/Dockerfile", "labkit/assets/claims/02-other.toml"):
        (project.root / name).write_text("# edited\n")
        assert project.run().status == "reused"
    for name, text in (("labkit/assets/tiny/answer.txt", "22\n"), (f"labkit/assets/claims/{STEM}.toml", "# new\n")):
        (project.root / name).write_text(text)
        executed = project.run()
        assert (executed.status, executed.reason) == ("ok", f"asset {name} changed")
    assert project.printed() == "44"


def test_a_folder_the_lab_reads_is_an_input_beyond_its_imports(project: Project,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A lab that reads files its code does not import (06 lints every Dockerfile of labkit/) says so in `reads`."""
    assert project.run().status == "ok"
    (project.root / "labkit/instruments/unused.py").write_text("UNUSED = 2\n")
    assert project.run().status == "reused"  # imported by nothing
    reader = Lab(STEM, "A tiny notebook", requirements=(), bases=("tiny-base",), tables={},
                 reads=("labkit/instruments",))
    monkeypatch.setattr(catalog, "all_labs", lambda: [reader])
    assert project.run().reason == "instrument labkit/instruments/unused.py added"
    (project.root / "labkit/instruments/unused.py").write_text("UNUSED = 3\n")
    executed = project.run()
    assert (executed.status, executed.reason) == ("ok", "instrument labkit/instruments/unused.py changed")


def test_fresh_quick_lost_results_and_a_failure_never_reuse(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    assert project.run().status == "ok"
    with monkeypatch.context() as broken:  # another lab that does not import: no base can be compared
        broken.setattr(catalog, "all_labs", _a_lab_that_does_not_import)
        unknown = project.run()
    assert (unknown.status, unknown.reason) == (
        "ok", "the labs' declarations did not import (ImportError: broken lab), so no base recipe can be compared")
    fresh = project.run(fresh="--fresh: every notebook is executed again")
    assert (fresh.status, fresh.reason) == ("ok", "--fresh: every notebook is executed again")
    quick = project.run(quick=True)
    assert (quick.status, quick.reason) == ("ok", "quick mode: only full live runs reuse an earlier execution")
    assert (Path(quick.output), (project.root / "build" / "quick" / "results" / STEM).is_dir()) == (
        project.root / "build" / "quick" / "notebooks" / f"{STEM}.ipynb", True)
    assert project.run().status == "reused"  # the quick run left the full execution and its results alone
    shutil.rmtree(project.results / STEM)  # an executed copy without its results is not reused
    gone = project.run()
    assert (gone.status, gone.reason) == ("ok", f"its results (build/results/{STEM}) are gone")

    _write_notebook(project.notebook, 'raise ValueError("broken on purpose")')
    assert project.run().status == "failed"
    failed_again = project.run()
    assert (failed_again.status, failed_again.reason) == ("failed", "no finished earlier execution to reuse")


def test_the_import_closure_follows_relative_local_and_package_imports(tmp_path: Path) -> None:
    files = {
        "labkit/__init__.py": "",
        "labkit/labs/__init__.py": "",
        "labkit/labs/topic/__init__.py": "from .part import run\n",
        "labkit/labs/topic/part.py": "def run():\n    from labkit.instruments import probe\n    return probe\n",
        "labkit/instruments/__init__.py": "",
        "labkit/instruments/probe.py": "from . import helper\n",
        "labkit/instruments/helper.py": "import os\n",
        "labkit/instruments/untouched.py": "",
        "labkit/assets/__init__.py": "",
        "labkit/assets/app/Dockerfile": "FROM scratch\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    notebook = tmp_path / "01-topic.ipynb"
    _write_notebook(notebook, "%matplotlib inline\nfrom labkit.labs import topic\nimport labkit.assets", "!ls")
    found = execution_cache.import_closure(execution_cache.notebook_code(notebook), tmp_path)
    assert [str(p.relative_to(tmp_path)) for p in found] == sorted(
        name for name in files if name != "labkit/instruments/untouched.py")


def test_changes_name_what_changed_was_added_or_removed() -> None:
    before = {"notebook n": "a", "lab l": "b", "mode": "quick, live", "base gone": "c"}
    now = {"notebook n": "a", "lab l": "x", "mode": "full, live", "base new": "d"}
    assert execution_cache.changes(before, now) == [
        "lab l changed", "mode changed (quick, live → full, live)", "base new added", "base gone removed"]
    assert execution_cache.key(before) != execution_cache.key(now)
    assert execution_cache.key(dict(reversed(list(before.items())))) == execution_cache.key(before)


def test_the_book_says_a_reused_chapter_was_measured_in_an_earlier_run_when_and_where(tmp_path: Path) -> None:
    machine = {"os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0-28-amd64", "arch": "x86_64", "cores": 2,
               "engine_version": "20.10.24"}
    provenance = {"run_id": "r1", "started_utc": "2026-12-05T04:00:00+00:00", "ended_utc": "2026-12-05T04:03:00+00:00",
                  "quick": False, "fingerprint": machine, "execution": {"key": "0123456789abcdef"}}
    chapter = book.Chapter(tmp_path / f"{STEM}.ipynb", "A tiny notebook", {"duration": 9.0}, True, tmp_path,
                           provenance, reused=True)
    note = book.reused_note(chapter)
    assert note.startswith("> ♻️ **Reused from an earlier execution.**")
    assert "since run `r1` (execution key `0123456789abcdef`)" in note
    assert ("measured in that run, from 2026-12-05T04:00:00+00:00 to 2026-12-05T04:03:00+00:00 UTC, on Debian "
            "GNU/Linux 12 (bookworm), kernel 6.1.0-28-amd64, x86_64, 2 cores, Docker Engine 20.10.24;") in note
    assert "| live in an earlier run, reused | False |" in book.environment_page([chapter], "")
    assert "measured live in an earlier run, reused by this one: 2026-12-05T04:00:00+00:00" in chapter.provenance_text()
    executed_now = book.Chapter(chapter.path, chapter.title, chapter.execution, True, tmp_path, provenance)
    assert "| live | False |" in book.environment_page([executed_now], "")


@pytest.mark.parametrize(("argv", "fresh"), [
    (["run", "02"], ""),
    (["run", "--fresh", "02"], "--fresh: every notebook is executed again"),
    (["run", "--record", "02"], "--record: a recording always measures anew"),
])
def test_labkit_run_reuses_unless_fresh_or_recording(argv: list[str], fresh: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    asked: dict[str, Any] = {}

    def execute(notebooks: list[Path], **options: Any) -> list[runner.NotebookRun]:
        asked.update(options)
        return []

    monkeypatch.setattr(runner, "execute", execute)
    monkeypatch.setattr(session, "require_committed", lambda: None)
    assert cli.main(argv) == 0
    assert asked["fresh"] == fresh


@pytest.mark.parametrize(("fresh", "expected"), [("FRESH=1", "labkit run --fresh --timeout"),
                                                 ("", "labkit run  --timeout")])
def test_make_lab_passes_fresh_on(fresh: str, expected: str) -> None:
    shown = run(["make", "-n", "-C", str(ROOT), "lab", *([fresh] if fresh else [])], 60).stdout
    assert expected in shown


def test_every_asset_folder_is_an_input_of_the_notebooks_that_read_it_and_each_only_its_own_stem_files() -> None:
    """An asset folder read by a notebook whose code does not name it would not be an input: an edit to it would
    leave the book showing executions made before it. Every folder is some notebook's input, each notebook has its
    own claims file and requirements file and no other's, and a notebook whose code calls a helper of
    labkit.assets that names a folder (``greeter_wheel_pins``) has that folder as an input: the helper's own
    strings do not count."""
    folders = {path.name for path in (ROOT / execution_cache.ASSETS).iterdir()
               if path.is_dir() and path.name != "__pycache__"}
    helpers = {node.name: {head for head in execution_cache._strings_heads(ast.unparse(node)) if head in folders}
               for node in ast.parse((ROOT / execution_cache.ASSETS / "__init__.py").read_text()).body
               if isinstance(node, ast.FunctionDef)}
    assert helpers["greeter_wheel_pins"] == {"greeter"}  # the scan sees what a helper reads
    host = execution_cache.Host("0", {})
    named: set[str] = set()
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
        found = execution_cache.inputs(notebook, None, host, quick=False, mode="live", root=ROOT)
        assets = [Path(name.split(" ", 1)[1]).relative_to(execution_cache.ASSETS) for name in found
                  if name.startswith("asset ")]
        inputs = {path.parts[0] for path in assets if len(path.parts) > 1}
        named |= inputs
        for folder in execution_cache.PER_NOTEBOOK:
            assert [p.name for p in assets if p.parts[0] == folder] == [f"{notebook.stem}.toml"], folder
        code = "\n".join(path.read_text() for path in execution_cache.import_closure(
            execution_cache.notebook_code(notebook), ROOT) if path.suffix == ".py")
        for helper, reads in helpers.items():
            if re.search(rf"\b{helper}\(", code.replace(f"def {helper}(", "")):
                assert reads <= inputs, f"{notebook.stem} calls assets.{helper}, which reads {reads}"
    assert named == folders


def test_every_dockerfile_notebook_06_lints_is_an_input_of_its_execution() -> None:
    lab = next(lab for lab in catalog.all_labs() if lab.stem == tags_digests_and_registries.STEM)
    found = execution_cache.inputs(ROOT / "notebooks" / f"{lab.stem}.ipynb", lab, execution_cache.Host("0", {}),
                                   quick=False, mode="live", root=ROOT)
    linted = {str(source.path.relative_to(ROOT)) for source in tags_digests_and_registries.dockerfile_sources()}
    assert "labkit/assets/greeter/Dockerfile.dependencies-first" in linted  # another notebook's asset
    assert linted <= {name.partition(" ")[2] for name in found}
