"""The house's floors: the runtime core, and on it the outputs and the training wing, neither importing the
other. Data flows one way; nothing that scores imports training code.

Read from the source (``ast``), so a lazy import inside a function counts as much as one at the top.
"""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gan_face"
#: What each floor may import. The runtime core is the ground floor; outputs (files in, reports out) and the
#: training wing both stand on it and neither imports the other: training finds its files with the core's walker
#: (``gan_face.files``), never through ``outputs``.
MAY_IMPORT = {"core": {"core"}, "outputs": {"core", "outputs"}, "training": {"core", "training"}}
#: The one reach across: the command line's ``finetune`` subcommand loads the training wing when it runs.
ALLOWED_ACROSS = {("gan_face.outputs.cli", "gan_face.training.finetune")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("outputs", "training") else "core"


def imports_of(path: Path) -> set[str]:
    """Every gan_face module ``path`` imports, anywhere in it, resolved to absolute names."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("gan_face")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("gan_face"):
                continue
            # "from . import x" may name a submodule
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                where = PACKAGE.parent / Path(*candidate.split("."))
                known = where.with_suffix(".py").exists() or (where / "__init__.py").exists()
                found.add(candidate if known else target)
    return found - {module}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


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
