"""Reference pages made from the code when the site is built, so that they cannot drift from it.

A page asks for one with an HTML comment on a line of its own (outside code blocks)::

    <!-- generate: cli -->         every command of the ``sparseinst`` Typer app, its options
    <!-- generate: recipes -->     the built-in recipes and the recipe schema
    <!-- generate: components -->  every registered component by family, with its parameters
    <!-- generate: zoo -->         the model zoo table

MkDocs loads this file as a hook (``hooks:`` in mkdocs.yml) and calls ``on_page_markdown``;
mkdocstrings loads it as a Griffe extension for ``DoctestBlocks``. Importing it does nothing
else: the package, typer, pydantic and griffe are imported by the generator or extension that
needs them.
"""

from __future__ import annotations

import functools
import inspect
import io
import posixpath
import re
import sys
import textwrap
import tokenize
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the checkout these pages document
MARKER = re.compile(r"^<!--\s*generate:\s*([\w-]+)\s*-->\s*$")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
NONE = "–"  # a cell with nothing to show
RECIPES_PAGE, COMPONENTS_PAGE = "reference/recipes.md", "reference/components.md"  # where generated links point


# --- the hook ---------------------------------------------------------------------------------

def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    """Replace each ``<!-- generate: NAME -->`` line with the generated Markdown."""
    src = page.file.src_uri
    lines, fence = [], None
    for line in markdown.splitlines():
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
        elif fence is not None and opened and opened.group(1).startswith(fence) and not line.strip(fence[0] + " "):
            fence = None
        marker = MARKER.match(line) if fence is None else None
        if marker is None:
            lines.append(line)
            continue
        name = marker.group(1)
        if name not in GENERATORS:
            from mkdocs.exceptions import PluginError

            raise PluginError(f"{src}: unknown '<!-- generate: {name} -->' (known: {', '.join(GENERATORS)})")
        _importable_checkout()
        lines.append(GENERATORS[name](functools.partial(_link, src)))
    return "\n".join(lines) + "\n"


def _importable_checkout() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def _link(page: str, target: str) -> str:
    """``target`` (a page path from docs/, with an optional #anchor) relative to ``page``."""
    path, _, anchor = target.partition("#")
    relative = posixpath.relpath(path, posixpath.dirname(page) or ".") if path else ""
    return relative + (f"#{anchor}" if anchor else "")


# --- Markdown helpers -------------------------------------------------------------------------

def text(value: Any) -> str:
    """Plain text as Markdown on one line: Markdown's own characters escaped, ``|`` and ``<``
    too, so that it can stand in a table cell."""
    escaped = " ".join(str(value).split()).replace("\\", "\\\\")
    for char in "`*_[]|":
        escaped = escaped.replace(char, "\\" + char)
    return escaped.replace("<", "&lt;")


def code(value: Any) -> str:
    """A code span (a ``|`` inside one does not split a table cell; ``<`` is shown as is)."""
    value = " ".join(str(value).split())
    return f"`` {value} ``" if "`" in value else f"`{value}`"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; the cells are Markdown already (see ``text`` and ``code``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell or NONE for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    """A value as a recipe (or ``--set``) writes it; ``null`` unsets an optional value."""
    if value is None:
        return "null"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return str(value)


def docstring(obj: Any) -> str:
    """An object's own docstring, dedented (Markdown already: the project writes prose with
    ``code`` spans)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if doc else ""


def summary(obj: Any) -> str:
    """The first paragraph of an object's docstring, on one line."""
    return " ".join(docstring(obj).split("\n\n")[0].split())


# --- <!-- generate: cli --> -------------------------------------------------------------------

def cli_reference(link: Callable[[str], str]) -> str:
    import typer

    from sparseinst_cli.cli.app import app

    sections: list[str] = []

    def walk(command: Any, path: list[str], parent: Any) -> None:
        ctx = command.context_class(command, parent=parent, info_name=path[-1])
        sections.append(_command_section(command, path, ctx))
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                walk(sub, [*path, name], ctx)

    walk(typer.main.get_command(app), ["sparseinst"], None)
    return "\n\n".join(sections)


def _command_section(command: Any, path: list[str], ctx: Any) -> str:
    title = " ".join(path)
    usage = " ".join([title, *command.collect_usage_pieces(ctx)])
    parts = [f"## {title} {{#{'-'.join(path)}}}", f"```text\n{usage}\n```", _help_markdown(command.help or "")]
    subcommands = {name: sub for name, sub in getattr(command, "commands", {}).items() if not sub.hidden}
    if subcommands:
        parts.append(table(["Command", "What it does"], (
            [f"[{code(f'{title} {name}')}](#{'-'.join([*path, name])})",
             text(_plain(sub.get_short_help_str(limit=1000)))]
            for name, sub in subcommands.items())))
    rows = [_param_row(param, ctx) for param in command.params if not getattr(param, "hidden", False)]
    if rows:
        parts.append(table(["Argument or option", "Type", "Default", "Description"], rows))
    return "\n\n".join(part for part in parts if part)


def _plain(markup: str) -> str:
    """Help text as the terminal shows it: Rich markup (``\\[`` escapes, ``[bold]`` tags) removed."""
    try:
        from rich.markup import render

        return render(markup).plain
    except Exception:  # noqa: BLE001 - not valid markup: shown as written, escapes undone
        return markup.replace("\\[", "[")


def _help_markdown(help_text: str) -> str:
    """A command's docstring: prose paragraphs, and indented lines (the examples) as code."""
    blocks: list[str] = []
    for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(help_text)):
        lines = [line for line in paragraph.splitlines() if line.strip() != "\b"]
        prose: list[str] = []
        code_lines: list[str] = []
        for line in [*lines, ""]:
            indented = line[:1].isspace() and bool(line.strip())
            if indented:
                if prose:
                    blocks.append(text(_plain(" ".join(prose))))
                    prose = []
                code_lines.append(line)
                continue
            if code_lines:
                body = textwrap.dedent("\n".join(code_lines)).replace("\\[", "[")
                blocks.append(f"```bash\n{body}\n```")
                code_lines = []
            if line.strip():
                prose.append(line.strip())
        if prose:
            blocks.append(text(_plain(" ".join(prose))))
    return "\n\n".join(blocks)


DEFAULT_IN_HELP = re.compile(r"\s*\\\[default: ([^\]]*)\]")


def _param_row(param: Any, ctx: Any) -> list[str]:
    help_text = param.help or ""
    described_default = DEFAULT_IN_HELP.search(help_text)
    help_text = DEFAULT_IN_HELP.sub("", help_text)
    if param.param_type_name == "argument":  # named as the usage line names it
        flags = code(re.sub(r"[][{}]", "", " ".join(param.get_usage_pieces(ctx))))
    else:
        flags = ", ".join(code(opt) for opt in sorted(param.opts, key=len))
        if param.secondary_opts:
            flags += " / " + ", ".join(code(opt) for opt in param.secondary_opts)
    default = text(_plain(described_default.group(1))) if described_default else _default(param)
    return [flags, _param_type(param, ctx), default, text(_plain(help_text))]


def _is_flag(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False)) and not getattr(param, "count", False)


def _param_type(param: Any, ctx: Any) -> str:
    if _is_flag(param):
        return "flag"
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and getattr(descriptor, "is_choice", False):
        choices = descriptor.choices or ()
    else:
        choices = getattr(getattr(param, "type", None), "choices", None) or ()
    if choices:
        kind = "one of " + ", ".join(code(getattr(choice, "value", choice)) for choice in choices)
    elif param.metavar and param.param_type_name != "argument":  # an argument's metavar is its name
        kind = code(param.metavar)
    else:
        shown = param.display_type(ctx) if hasattr(param, "display_type") else getattr(param.type, "name", "")
        shown = str(shown).strip("<>").removesuffix(" range")
        kind = code(re.sub(r"^list\[(.*)\]$", r"\1", shown).lower())
    low = getattr(param, "min", getattr(getattr(param, "type", None), "min", None))
    high = getattr(param, "max", getattr(getattr(param, "type", None), "max", None))
    if low is not None and high is not None:
        kind += f" in \\[{low}, {high}\\]"
    elif low is not None:
        kind += f" ≥ {low}"
    elif high is not None:
        kind += f" ≤ {high}"
    if getattr(param, "multiple", False):
        kind += ", repeatable"
    elif param.nargs == -1:
        kind += ", any number"
    return kind


def _default(param: Any) -> str:
    if param.required:
        return "required"
    value = param.default
    if callable(value) and not isinstance(value, Enum):
        return "computed"
    if _is_flag(param):
        if param.secondary_opts:
            return code(max(param.opts, key=len) if value else param.secondary_opts[0])
        return "on" if value else "off"
    if value is None or value == "" or (isinstance(value, (list, tuple)) and not value):
        return NONE
    if isinstance(value, (list, tuple)):
        return ", ".join(code(getattr(item, "value", item)) for item in value)
    return code(getattr(value, "value", value))


# --- <!-- generate: recipes --> ---------------------------------------------------------------

def recipes_reference(link: Callable[[str], str]) -> str:
    import tomllib

    from sparseinst_cli import recipe as schema
    from sparseinst_cli.resources import builtin_recipe, builtin_recipe_names

    names = builtin_recipe_names()
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.rpartition("/")[0], []).append(name)
    parts = ["## Built-in recipes {#built-in-recipes}",
             "Give a name to `train`, `predict --recipe`, `time --recipe` or a recipe's `extends`; "
             "`sparseinst recipes NAME` prints one with every default filled in. Each recipe below "
             "lists only what it sets on top of the recipe it extends."]
    for folder, members in sorted(groups.items(), key=lambda item: (item[0] != "", item[0])):
        if folder:
            parts.append(f"## Recipes in `{folder}/` {{#recipes-{_anchor(folder)}}}")
            parts.append(f"Named with their folder: `sparseinst train {members[0]}`.")
        for name in members:
            data = tomllib.loads(builtin_recipe(name).read_text(encoding="utf-8"))
            parts.append(_recipe_section(name, data, names))
    parts.append(_schema_reference(schema, link))
    return "\n\n".join(parts)


def _anchor(name: str) -> str:
    return re.sub(r"[^\w-]", "-", name)


def _recipe_section(name: str, data: dict[str, Any], names: list[str]) -> str:
    description = data.pop("description", "")
    base = data.pop("extends", None)
    parts = [f"### {code(name)} {{#recipe-{_anchor(name)}}}"]
    if description:
        parts.append(text(description))
    if base is None:
        parts.append("Extends no recipe: what it leaves out is the schema's default.")
    elif base in names:
        parts.append(f"Extends [{code(base)}](#recipe-{_anchor(base)}).")
    else:
        parts.append(f"Extends {code(base)}.")
    settings = list(_flatten(data))
    if settings:
        parts.append(table(["Setting", "Value"], ([code(key), code(toml_value(value))] for key, value in settings)))
    return "\n\n".join(parts)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _schema_reference(schema: Any, link: Callable[[str], str]) -> str:
    from components.registry import StrictModel

    components_page = link(COMPONENTS_PAGE)
    # The top level, and the two sections that ``recipe_schema()`` adds to it with the components.
    sections = _sections([("", schema.RecipeBase), ("model", schema.ModelSectionBase),
                          ("train", schema.TrainSectionBase)], StrictModel)
    where = {key: f"#schema-{_anchor(key) or 'top-level'}" for key, _ in sections}
    components = {"model": schema.MODEL_FAMILIES, "train": schema.TRAIN_FAMILIES}
    parts = ["## Schema {#schema}",
             "Every field a recipe may set, its type and its default. Unknown keys are errors "
             "that name the closest known key; `--set KEY=VALUE` goes through the same checks. "
             f"The component sections take the parameters listed on the [components page]({components_page})."]
    for key, model in sections:
        title = f"[{key}]" if key else "Top level"
        parts.append(f"### {text(title)} {{{where[key]}}}")
        if doc := docstring(model):
            parts.append(doc)
        rows = []
        if not key:
            rows.append([code("extends"), code("str"), NONE,
                         "A built-in recipe name or a path (relative to this file first). This file's "
                         "tables merge key by key over it; other values replace its values."])
        comments = _field_comments(model)
        for field, info in model.model_fields.items():
            section = f"{key}.{field}" if key else field
            if section in where:
                kind = f"[table]({where[section]})"
                default = NONE if info.default is None else "see the table"
            else:
                kind, default = _field_type(info.annotation, info.metadata), _field_default(info)
            rows.append([code(field), kind, default, text(comments.get(field, ""))])
        for family in components.get(key, ()):
            rows.append([code(family), f"[component]({components_page}#family-{family})",
                         code(toml_value({"name": schema.DEFAULT_COMPONENTS[family]})),
                         f"`name` picks a registered {text(family)}; the other keys are its parameters."])
        parts.append(table(["Field", "Type", "Default", "Notes"], rows))
    return "\n\n".join(parts)


def _sections(roots: list[tuple[str, type]], base: type) -> list[tuple[str, type]]:
    """Each root, then the tables nested in it (``[data.train]``...), in the order of the fields."""
    found: list[tuple[str, type]] = []

    def visit(key: str, model: type) -> None:
        found.append((key, model))
        for field, info in model.model_fields.items():
            nested = _nested_model(info.annotation, base)
            if nested is not None:
                visit(f"{key}.{field}" if key else field, nested)

    for key, model in roots:
        visit(key, model)
    return found


def _nested_model(annotation: Any, base: type) -> type | None:
    candidates = [annotation, *_union_members(annotation)]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, base)), None)


def _union_members(annotation: Any) -> tuple[Any, ...]:
    from typing import Union, get_args, get_origin

    return get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()


def _field_type(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    """``float > 0``, ``list of int > 0``, ``one of "sqrt", "linear", "none"``... as Markdown."""
    from typing import Annotated, Literal, get_args, get_origin

    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _field_type(args[0], [*args[1:], *metadata])
    if origin is Literal:
        return "one of " + ", ".join(code(toml_value(arg)) for arg in args)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(code(toml_value(member)) for member in annotation)
    members = _union_members(annotation)
    if members:
        kinds = [_field_type(arg, metadata) for arg in members if arg is not type(None)]
        return " or ".join(kinds) + (" or `null`" if type(None) in members else "")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_field_type(args[0])}"
        kinds = [_field_type(arg) for arg in args]
        return f"list of {len(args)} {kinds[0]}" if len(set(kinds)) == 1 else "list of " + ", ".join(kinds)
    if origin is dict:
        return f"table of {_field_type(args[1])}" if args else "table"
    names = {Path: "path", str: "str", int: "int", float: "float", bool: "bool"}
    name = names.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return code(name + _bounds(metadata))


def _bounds(metadata: Sequence[Any]) -> str:
    found: dict[str, Any] = {}
    for item in metadata:
        for inner in [item, *getattr(item, "metadata", ())]:
            for kind in ("gt", "ge", "lt", "le"):
                if getattr(inner, kind, None) is not None:
                    found[kind] = getattr(inner, kind)
    low = ("gt", found["gt"]) if "gt" in found else ("ge", found["ge"]) if "ge" in found else None
    high = ("lt", found["lt"]) if "lt" in found else ("le", found["le"]) if "le" in found else None
    if low and high:
        return f" in {'(' if low[0] == 'gt' else '['}{low[1]}, {high[1]}{')' if high[0] == 'lt' else ']'}"
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return "".join(f" {symbols[bound[0]]} {bound[1]}" for bound in (low, high) if bound)


def _field_default(info: Any) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True) if info.default_factory else info.default
    return NONE if value is None else code(toml_value(value))


def _field_comments(model: type) -> dict[str, str]:
    """The comments on each field's line, and the comment lines right above it, in the source."""
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):
        return {}
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT and not token.string.lstrip("# ").startswith("noqa")}
    lines = source.splitlines()
    found: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        match = re.match(r"    (\w+)\s*:", line)
        if not match or match.group(1) not in model.model_fields:
            continue
        above, row = [], number - 1
        while row >= 1 and lines[row - 1].strip().startswith("#") and row in comments:
            above.insert(0, comments[row])
            row -= 1
        notes = [*above, comments.get(number, "")]
        found[match.group(1)] = " ".join(note for note in notes if note)
    return found


# --- <!-- generate: components --> ------------------------------------------------------------

FAMILY_TITLES = {"backbone": "Backbones", "encoder": "Encoders", "iam": "Instance activation maps (IAM)",
                 "decoder": "Decoders", "matcher": "Matchers", "loss": "Losses"}


def components_reference(link: Callable[[str], str]) -> str:
    from inspect import Parameter

    from components.registry import iter_components, registry
    from sparseinst_cli.recipe import DEFAULT_COMPONENTS, MODEL_FAMILIES

    parts: list[str] = []
    family_seen = None
    for family, name, params in iter_components():
        if family != family_seen:
            family_seen = family
            section = f"{'model' if family in MODEL_FAMILIES else 'train'}.{family}"
            recipes_link = link(f"{RECIPES_PAGE}#schema-{_anchor('model' if family in MODEL_FAMILIES else 'train')}")
            parts.append(f"## {FAMILY_TITLES.get(family, family.capitalize())} {{#family-{family}}}")
            parts.append(f"Chosen in a recipe's [{code(f'[{section}]')}]({recipes_link}) with `name`; "
                         f"the default is {code(DEFAULT_COMPONENTS.get(family, NONE))}.")
        parts.append(f"### {code(name)} {{#{family}-{_anchor(name)}}}")
        if first := summary(registry(family).get(name)):
            parts.append(first)
        rows = [[code(param.name), code(param.type),
                 "required" if param.default is Parameter.empty else NONE if param.default is None
                 else code(toml_value(param.default))]
                for param in params]
        parts.append(table(["Parameter", "Type", "Default"], rows) if rows else "No parameters.")
    return "\n\n".join(parts)


# --- <!-- generate: zoo --> -------------------------------------------------------------------

def zoo_reference(link: Callable[[str], str]) -> str:
    from sparseinst_cli.weights.zoo import MODELS

    def number(value: float | None) -> str:
        return NONE if value is None else f"{value:.1f}"

    rows = []
    for model in MODELS:
        recipe = (f"[{code(model.recipe)}]({link(f'{RECIPES_PAGE}#recipe-{_anchor(model.recipe)}')})"
                  if model.recipe else "not available here")
        rows.append([code(model.name), text(model.backbone), recipe, str(model.input_size),
                     "yes" if model.augmented else "no", number(model.ap_val), number(model.ap_test_dev),
                     number(model.fps_2080ti), text(model.licence), f"[Google Drive]({model.url})",
                     text(model.notes)])
    return table(["Name", "Backbone", "Recipe", "Input", "Aug", "AP val", "AP test-dev", "FPS (2080 Ti)",
                  "Licence", "Source", "Notes"], rows)


GENERATORS: dict[str, Callable[[Callable[[str], str]], str]] = {
    "cli": cli_reference,
    "recipes": recipes_reference,
    "components": components_reference,
    "zoo": zoo_reference,
}


# --- the Griffe extension -----------------------------------------------------------------------

def __getattr__(name: str) -> Any:
    """``DoctestBlocks`` is made on first use, so that importing this file does not import griffe."""
    if name == "DoctestBlocks":
        return _doctest_blocks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _doctest_blocks() -> type:
    import griffe

    class DoctestBlocks(griffe.Extension):
        """Shows a docstring's ``>>>`` session as a Python console block, not as nested quotes."""

        def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
            if obj.docstring is not None:
                obj.docstring.value = fence_doctests(obj.docstring.value)

    return DoctestBlocks


def fence_doctests(doc: str) -> str:
    """Wrap each run of ``>>>`` lines (with their ``...`` continuations and output) in a
    ``pycon`` code block."""
    out: list[str] = []
    session: list[str] = []
    for line in [*doc.splitlines(), ""]:
        if line.lstrip().startswith(">>>") or (session and line.strip()):
            session.append(line)
            continue
        if session:
            out += ["", "```pycon", *textwrap.dedent("\n".join(session)).splitlines(), "```", ""]
            session = []
        out.append(line)
    return "\n".join(out).strip("\n")
