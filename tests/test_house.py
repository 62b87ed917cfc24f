"""The house (docs/design.md): imports point one way, from the application down to the core, and only the model
zoo and the CLI import training, so that following a model from "which model?" to a sample never climbs back up."""
import ast
from pathlib import Path

import scoregen

PACKAGE = Path(scoregen.__file__).parent
# floors, lowest first; a module may import its own floor and those below it
FLOORS = {"core": 0, "runtime.outputs": 0, "runtime.cache": 0, "data": 1, "models.nets": 1, "samplers": 2,
          "runtime.distributed": 3, "models": 4, "evaluation": 5, "app": 6}
LEAVES = ("core", "runtime.outputs", "runtime.cache")  # import nothing above the core


def floor_of(module: str) -> str:
    parts = module.split(".")[1:]
    for depth in (2, 1):
        if ".".join(parts[:depth]) in FLOORS:
            return ".".join(parts[:depth])
    raise AssertionError(f"{module} is on no floor of {sorted(FLOORS)}")


def imports() -> list[tuple[str, str]]:
    """(module, imported module) for every import of the package inside it, at the top or in a function."""
    edges = []
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target + "." + a.name for a in node.names]  # "from . import a, b": modules a and b
                targets = names if all(map(_exists, names)) else [target]
                edges += [(module, t) for t in targets if t.startswith("scoregen.")]
            elif isinstance(node, ast.Import):
                edges += [(module, a.name) for a in node.names if a.name.startswith("scoregen.")]
    return [(m, t) for m, t in edges if m not in ("scoregen", "scoregen.__main__")]


def _exists(module: str) -> bool:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_imports_point_down():
    up = [(m, t) for m, t in imports() if FLOORS[floor_of(t)] > FLOORS[floor_of(m)]]
    assert not up, up
    leaves = [(m, t) for m, t in imports() if floor_of(m) in LEAVES and floor_of(t) not in ("core",)]
    assert not leaves, leaves


def test_only_the_zoo_and_the_cli_import_training():
    importers = {m for m, t in imports() if t == "scoregen.models.train"}
    assert importers == {"scoregen.models.zoo", "scoregen.app.cli"}


def test_likelihood_and_samplers_share_the_flow_not_each_other():
    likelihood = {t for m, t in imports() if m.startswith("scoregen.evaluation.likelihood")}
    assert not any(t.startswith("scoregen.samplers") for t in likelihood)
    assert "scoregen.core.flow" in likelihood
