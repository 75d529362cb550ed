"""The README's reference of the components a platform team imports: each one's guarantee, Args and outputs.

Read from the code itself (each component's docstring, its frozen `<Component>Args` dataclass and its typed output
attributes), so the table cannot drift from the API; a test fails when the README's copy does.

    python -m infra.reference                    # print the table (markdown)
    python -m infra.reference --write README.md  # replace it between the components-table markers
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import sys
from dataclasses import dataclass
from types import ModuleType

import pulumi

import infra
from infra import markers

TABLE_START = "<!-- components-table:start -->"
TABLE_END = "<!-- components-table:end -->"
# Modules that hold no component: the offline harness and the CLIs around it.
_NOT_COMPONENTS = ("infra.offline", "infra.plan", "infra.plan_diff", "infra.plan_ref", "infra.plan_report")


@dataclass(frozen=True)
class Component:
    cls: type[pulumi.ComponentResource]
    args: type

    @property
    def module(self) -> str:
        return self.cls.__module__

    @property
    def guarantee(self) -> str:
        """The docstring's first paragraph: what the component guarantees."""
        doc = inspect.getdoc(self.cls) or ""
        return " ".join(doc.split("\n\n")[0].split())

    @property
    def outputs(self) -> dict[str, str]:
        return {name: str(kind) for name, kind in inspect.get_annotations(self.cls).items()}


def _modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(infra.__path__, "infra.") if not m.name.startswith(_NOT_COMPONENTS)]
    return [importlib.import_module(name) for name in sorted(names)]


def components() -> list[Component]:
    """Every ComponentResource the package defines, with its Args class; one defined without Args is an error."""
    found = []
    for module in _modules():
        for cls in vars(module).values():
            if inspect.isclass(cls) and issubclass(cls, pulumi.ComponentResource) and cls.__module__ == module.__name__:
                args = getattr(module, f"{cls.__name__}Args", None)
                if args is None:
                    raise TypeError(f"{module.__name__}.{cls.__name__} has no {cls.__name__}Args dataclass")
                found.append(Component(cls, args))
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _field(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        default = f" = {f.default!r}"
    elif f.default_factory is not dataclasses.MISSING:
        default = f" = {f.default_factory()!r}"
    else:
        default = ""
    return f"`{f.name}: {f.type}{default}`"


def render_markdown() -> str:
    lines = [
        "Generated from the components' docstrings, Args dataclasses and typed outputs by `python -m infra.reference`;",
        "a test fails when it drifts. Every component is `Component(name, ComponentArgs(...), opts=None)`.",
        "",
        "| Component | What it guarantees | Args | Outputs |",
        "| --- | --- | --- | --- |",
    ]
    for c in components():
        args = ", ".join(_field(f) for f in dataclasses.fields(c.args))
        outputs = ", ".join(f"`{name}: {kind}`" for name, kind in c.outputs.items()) or "none"
        lines.append(f"| `{c.cls.__name__}` (`{c.module}`) | {_cell(c.guarantee)} | {_cell(args)} | {_cell(outputs)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    description = (__doc__ or "").split("\n\n")[0]
    return markers.block_cli("python -m infra.reference", description, TABLE_START, TABLE_END, render_markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
