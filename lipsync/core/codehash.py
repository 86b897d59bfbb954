"""Code hashes for the workflow's rerun triggers: which lipsync modules a `lipsync <command>` runs,
found statically with `ast`, and a hash of their meaning (the AST without docstrings), so an edit
reruns exactly the jobs whose code changed and a comment or docstring reruns nothing.

Used by workflow/rules/common.smk as each rule's `code` param; torch-free and import-free (the
package is read as source, never imported), so planning stays fast.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

# Modules whose string constants are not followed as imports, and whose lists of module names are
# not part of their meaning. The metric registry names every metric module in MODULES; a job runs
# only the metrics it scores, whose modules its rule adds itself (`extra_modules`). Following
# those strings would make training depend on every metric, and hashing the list would rescore
# every metric when one is added.
UNFOLLOWED_STRINGS = frozenset({"lipsync.metrics.registry"})


def normalized(node: ast.AST, package: str | None = None) -> str:
    """The meaning of `node` as text: its AST dump without docstrings or source positions, and,
    with `package`, without the names of that package's modules listed in tuples, lists or sets.

    Comments never reach the AST; docstrings (a string constant as the first statement of a
    module, class or function) are dropped here, so documenting code changes no hash.
    """
    tree = _without_docstrings(ast.parse(ast.unparse(node)))
    if package:
        _drop_listed_modules(tree, package)
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def _drop_listed_modules(tree: ast.AST, package: str) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            node.elts = [e for e in node.elts if not (
                isinstance(e, ast.Constant) and isinstance(e.value, str)
                and e.value.startswith(f"{package}."))]


def _without_docstrings(tree: ast.AST) -> ast.AST:
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for node in ast.walk(tree):
        if not isinstance(node, documented) or not node.body:
            continue
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                first.value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
    return tree


def module_file(package: Path, module: str) -> Path | None:
    """The source file of module `module` (a dotted name) of the package at `package`, or None
    if it names no module of that package."""
    parts = module.split(".")
    if parts[0] != package.name or not all(part.isidentifier() for part in parts):
        return None
    base = package.joinpath(*parts[1:])
    for file in (base.with_suffix(".py"), base / "__init__.py"):
        if file.is_file():
            return file
    return None


def imported_names(tree: ast.AST, package: str, *, strings: bool = True) -> Iterator[str]:
    """Dotted names imported anywhere in `tree` (lazy imports inside functions too), and, with
    `strings`, string constants: the model registry imports its modules by name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1] + ([base] if base else [])
                base = ".".join(parts)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def module_closure(package: Path, names: Iterable[str]) -> dict[str, Path]:
    """name -> file of every module of `package` that importing `names` runs, the package
    __init__s on the way too."""
    found: dict[str, Path] = {}
    pending = list(names)
    while pending:
        parts = pending.pop().split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[:n])
            file = module_file(package, name)
            if file is None or name in found:
                continue
            found[name] = file
            inside = name if file.name == "__init__.py" else name.rpartition(".")[0]
            tree = ast.parse(file.read_bytes(), str(file))
            pending.extend(imported_names(tree, inside, strings=name not in UNFOLLOWED_STRINGS))
    return found


def _cli_commands(tree: ast.Module) -> dict[str, tuple[str, str]]:
    """command name -> (function, arguments function) of every `@command(name, help)(arguments)`."""
    commands = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            match decorator:
                case ast.Call(
                    func=ast.Call(
                        func=ast.Name(id="command"), args=[ast.Constant(value=str() as name), *_]
                    ),
                    args=[ast.Name(id=arguments)],
                ):
                    commands[name] = (node.name, arguments)
    return commands


def _reachable(functions: dict[str, ast.FunctionDef], start: Iterable[str]) -> set[str]:
    """Top-level functions reachable from `start` through the names they use."""
    seen: set[str] = set()
    pending = list(start)
    while pending:
        name = pending.pop()
        if name in functions and name not in seen:
            seen.add(name)
            pending.extend(n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name))
    return seen


class UnknownCommand(LookupError):
    """A rule runs a `lipsync` command that lipsync/cli.py does not define."""


def command_code(package: Path, command: str) -> tuple[list[ast.stmt], dict[str, Path]]:
    """(cli statements, {module: file}) that `lipsync <command>` runs.

    The cli part is lipsync/cli.py without the functions only other commands use; the modules
    are every package module that part imports, followed through their own imports.
    """
    cli_file = package / "cli.py"
    tree = ast.parse(cli_file.read_bytes(), str(cli_file))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    commands = _cli_commands(tree)
    if command not in commands:
        raise UnknownCommand(f"{cli_file} has no command {command!r}")
    own = _reachable(functions, commands[command])
    others = set().union(*(_reachable(functions, c) for c in commands.values()))
    kept = [node for node in tree.body
            if not (isinstance(node, ast.FunctionDef) and node.name in others - own)]
    names = [name for node in kept for name in imported_names(node, package.name)]
    modules = module_closure(package, names)
    modules.pop(f"{package.name}.cli", None)  # stands for itself: the kept part above
    return kept, modules


def every_module(package: Path) -> list[str]:
    """Dotted names of every module of the package."""
    return [".".join((package.name, *f.relative_to(package).with_suffix("").parts))
            for f in sorted(package.rglob("*.py"))]


def code_files(package: Path, command: str, extra_modules: Iterable[str] = ()) -> dict[str, Path]:
    """{module: file} whose meaning `code_hash` covers besides the cli: the command's modules
    plus the closure of `extra_modules` (what the command imports by a name given in its
    arguments: the metric a scoring job runs)."""
    _, modules = command_code(package, command)
    return {**modules, **module_closure(package, extra_modules)}


def code_hash(package: Path, command: str | None, extra_modules: Iterable[str] = ()) -> str:
    """sha256 (16 hex digits) over the meaning of what `lipsync <command>` runs (no command:
    nothing of the cli), plus `extra_modules` and what they import: a rule's `code` param."""
    kept, modules = command_code(package, command) if command else ([], {})
    modules = {**modules, **module_closure(package, extra_modules)}
    digest = hashlib.sha256(normalized(ast.Module(body=kept, type_ignores=[])).encode())
    for name, file in sorted(modules.items()):
        digest.update(name.encode())
        listed = package.name if name in UNFOLLOWED_STRINGS else None
        digest.update(normalized(ast.parse(file.read_bytes(), str(file)), listed).encode())
    return digest.hexdigest()[:16]
