"""The package layout follows the method's pipeline: each stage imports only stages below it,
and no two modules import each other (directly or through others)."""

import ast
import pathlib

import actbench

PACKAGE = pathlib.Path(actbench.__file__).parent
# Lowest first; a module may import its own stage and the stages before it.
STAGES = ("base", "expr", "models", "engine", "fisher", "tables", "search", "report",
          "launcher")
# Below every stage: what any of them may raise, read or ask.
BASE = ("actbench.errors", "actbench.defaults", "actbench.processes")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> str:
  if module in BASE:
    return "base"
  parts = module.split(".")
  return parts[1] if len(parts) > 2 or parts[1] in STAGES else "launcher"


def _imports(path: pathlib.Path, module: str) -> set[str]:
  """The actbench modules `path` imports, at any depth of its code (not under TYPE_CHECKING)."""
  tree = ast.parse(path.read_text())
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
      node.body = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("actbench."))
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("actbench"):
      for alias in node.names:  # `from actbench.expr import space` imports actbench.expr.space
        candidate = f"{node.module}.{alias.name}"
        found.add(candidate if candidate in MODULES else node.module)
  found.discard(module)
  return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {module: _imports(path, module) for module, path in MODULES.items()
         if module != "actbench"}


def test_every_import_points_at_a_real_module():
  for module, imported in GRAPH.items():
    assert imported <= set(MODULES), (module, imported - set(MODULES))


def test_stages_import_only_stages_below_them():
  assert {_stage(m) for m in GRAPH} == set(STAGES)
  for module, imported in GRAPH.items():
    for target in imported:
      if target == "actbench":
        continue
      assert STAGES.index(_stage(target)) <= STAGES.index(_stage(module)), (
          f"{module} ({_stage(module)}) imports {target} ({_stage(target)})")


def test_no_import_cycles():
  done, on_path = set(), []

  def visit(module):
    if module in on_path:
      raise AssertionError("import cycle: " + " -> ".join(on_path[on_path.index(module):]
                                                          + [module]))
    if module in done:
      return
    on_path.append(module)
    for target in sorted(GRAPH.get(module, ())):
      if not (module.startswith(target + ".") and MODULES[target].name == "__init__.py"):
        visit(target)  # a module importing its own package's __init__ is not a cycle
    on_path.pop()
    done.add(module)

  for module in sorted(GRAPH):
    visit(module)
