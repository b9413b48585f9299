"""The house's floors: the runtime core, and on it the outputs and the training wing, neither importing the
other. Data flows one way; nothing that scores imports training code. On top, ``scripts/`` and ``experiments/``:
entry points that may import anything in ``gan_face`` but not each other (a script's folder is on ``sys.path``
when it runs, so ``import bench`` would work by accident), and that nothing in ``src/`` imports. Library code a
second script needs goes into the package; no file edits ``sys.path`` to reach it.

Read from the source (``ast``), so a lazy import inside a function counts as much as one at the top.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "gan_face"
#: The top floors: folders of entry points (run as ``python scripts/x.py``), each file a module of its own.
ENTRY_FOLDERS = ("scripts", "experiments")
#: What each floor may import. The runtime core is the ground floor; outputs (files in, reports out) and the
#: training wing both stand on it and neither imports the other: training finds its files with the core's walker
#: (``gan_face.files``), never through ``outputs``.
#: Scripts and experiments stand on all three and import none of their own floor nor each other's.
MAY_IMPORT = {
    "core": {"core"},
    "outputs": {"core", "outputs"},
    "training": {"core", "training"},
    "scripts": {"core", "outputs", "training"},
    "experiments": {"core", "outputs", "training"},
}
#: The one reach across: the command line's ``finetune`` subcommand loads the training wing when it runs.
ALLOWED_ACROSS = {("gan_face.outputs.cli", "gan_face.training.finetune")}


def module_name(path: Path) -> str:
    if path.parent.name in ENTRY_FOLDERS and path.parent.parent == ROOT:
        return f"{path.parent.name}.{path.stem}"
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ENTRY_FOLDERS:
        return parts[0]
    return parts[1] if len(parts) > 1 and parts[1] in ("outputs", "training") else "core"


def entry_module(name: str) -> str | None:
    """``name`` as a module of ``scripts/`` or ``experiments/`` (``bench``: ``scripts.bench``, as the script's
    folder on ``sys.path`` resolves it when it runs), or None. A third-party module named like a script would count
    too (none is imported)."""
    top = name.split(".")[0]
    if top in ENTRY_FOLDERS:
        return name
    for folder in ENTRY_FOLDERS:
        if (ROOT / folder / f"{top}.py").exists():
            return f"{folder}.{name}"
    return None


def imports_of(path: Path) -> set[str]:
    """Every gan_face, script or experiment module ``path`` imports, anywhere in it, resolved to absolute names."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("gan_face")}
            found |= {entry_module(alias.name) for alias in node.names} - {None}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("gan_face"):
                if target in ENTRY_FOLDERS:  # from scripts import bench
                    found |= {f"{target}.{alias.name}" for alias in node.names}
                elif entry_module(target):  # from bench import build_folder
                    found.add(entry_module(target))
                continue
            # "from . import x" may name a submodule
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                where = PACKAGE.parent / Path(*candidate.split("."))
                known = where.with_suffix(".py").exists() or (where / "__init__.py").exists()
                found.add(candidate if known else target)
    return found - {module}


def entry_files() -> list[Path]:
    return sorted(p for folder in ENTRY_FOLDERS for p in (ROOT / folder).glob("*.py"))


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in [*PACKAGE.rglob("*.py"), *entry_files()]}


def forbidden_imports() -> set[tuple[str, str]]:
    """(importer, imported) pairs where a module reaches a floor it may not import from."""
    return {
        (source, target)
        for source, targets in graph().items()
        for target in targets
        if floor(target) not in MAY_IMPORT[floor(source)]
    }


def test_no_module_imports_from_a_floor_it_may_not_reach():
    assert forbidden_imports() <= ALLOWED_ACROSS, sorted(forbidden_imports() - ALLOWED_ACROSS)


def test_training_never_imports_outputs():
    # no exception here: the allowed reach across runs from outputs to training, never back
    back = sorted((s, t) for s, t in forbidden_imports() if floor(s) == "training" and floor(t) == "outputs")
    assert not back, back


def test_scripts_and_experiments_import_neither_each_other_nor_are_imported_from_src():
    # covered by the floors above; said apart so that a failure names the rule
    reached = sorted((s, t) for s, t in forbidden_imports() if floor(t) in ENTRY_FOLDERS)
    assert not reached, reached
    assert {floor(m) for m in graph()} >= set(ENTRY_FOLDERS)  # the top floors are read at all


def sys_path_edits(source: str, name: str) -> list[str]:
    """Where the code ``source`` (of the file ``name``) changes ``sys.path``: a call of one of its mutating
    methods, an assignment to it or to an item of it, or ``from sys import path`` (which would hide edits from this
    check)."""

    def is_sys_path(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        )

    edits = []
    for node in ast.walk(ast.parse(source)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value):
            if node.func.attr in ("insert", "append", "extend", "remove", "pop", "clear", "__setitem__"):
                edits.append(f"{where} sys.path.{node.func.attr}")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                if is_sys_path(target) or (isinstance(target, ast.Subscript) and is_sys_path(target.value)):
                    edits.append(f"{where} assigns sys.path")
        elif (
            isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names)
        ):
            edits.append(f"{where} from sys import path")
    return edits


def test_no_file_edits_sys_path():
    # library code a second file needs lives in the package, imported by its name, never reached by a path edit
    files = [*PACKAGE.rglob("*.py"), *entry_files(), *(ROOT / "tests").rglob("*.py")]
    assert len(entry_files()) > 2 and any(p.name == "test_architecture.py" for p in files)
    edits = [edit for path in files for edit in sys_path_edits(path.read_text(), str(path.relative_to(ROOT)))]
    assert not edits, edits


def test_the_sys_path_check_sees_an_edit():
    code = "import sys\nsys.path.insert(0, 'x')\nsys.path[:0] = ['y']\nsys.path += ['z']\nfrom sys import path\n"
    assert len(sys_path_edits(code, "sample.py")) == 4
    assert not sys_path_edits("import sys\nprint(sys.path[0], list(sys.path))\n", "reader.py")


def test_a_subpackage_of_the_core_is_core():
    # the networks' graphs are a package of their own (gan_face.graphs): still the ground floor, like every module
    graphs = {m: targets for m, targets in graph().items() if m.startswith("gan_face.graphs")}
    assert {"gan_face.graphs", "gan_face.graphs.runtime", "gan_face.graphs.layers"} <= set(graphs)
    assert {floor(m) for m in graphs} == {"core"} and "gan_face.graphs.runtime" in graph()["gan_face.cnn"]
    assert "gan_face.graphs.layers" in graphs["gan_face.graphs.mtcnn"]


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                raise AssertionError(" -> ".join(trail[trail.index(target) :] + [target]))
            if target in edges and not state.get(target):
                visit(target, trail + [target])
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node, [node])


def _modules_after(code: str) -> set[str]:
    script = code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    return set(done.stdout.split())


def test_import_is_light():
    loaded = _modules_after("import gan_face")
    assert "torch" not in loaded and not any(m.startswith("gan_face.training") for m in loaded)


def test_a_scan_never_imports_training_code(tmp_path):
    from PIL import Image
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "face.jpg")
    code = (
        "from gan_face.outputs.cli import main\n"
        f"try:\n    main(['scan', {str(tmp_path)!r}, '-o', {str(tmp_path / 'r.html')!r}, '-q', '--summary'])\n"
        "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
    )
    loaded = _modules_after(code)
    assert "gan_face.detector" in loaded and "gan_face.outputs.scan" in loaded  # the scan did run
    training = sorted(m for m in loaded if m.startswith("gan_face.training") or m.split(".")[0] == "sklearn")
    assert not training, training
