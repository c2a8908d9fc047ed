"""Schemas: which columns of a source feed which part of an example (App. A.1 datasets).

Every schema maps source columns onto the same *roles*: `target` (the image to generate), `condition` (the image
input), `mask`, `prompt`, `input_caption`, `output_caption`. A role lists candidate column names, tried in order,
so the common public layouts work without configuration; `DataSourceConfig.columns` overrides any of them.

Column names by format: "folder" and "hf" use the keys of `metadata.jsonl` / the dataset's columns. A
"webdataset" sample's members become columns as follows (see `mtu.data.webdataset`):
`KEY.jpg` -> "image"; `KEY.NAME.png` -> "NAME"; `KEY.NAME.0.png`, `KEY.NAME.1.png` -> "NAME" holding a list;
`KEY.txt` -> "text"; `KEY.NAME.txt` -> "NAME"; the fields of `KEY.json` -> columns of the same names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..errors import InputError
from ..registry import Registry
from ..upcycling.tasks import available_tasks
from .conditions import degraded, describe, masked

ROLES = ("target", "condition", "mask", "prompt", "input_caption", "output_caption")
_PROMPT_NAMES = ("prompt", "text", "caption", "txt")
# An instruction is not a caption: instruction-driven schemas do not fall back to caption columns.
_INSTRUCTION_NAMES = ("instruction", "prompt", "text")


@dataclass(frozen=True)
class ColumnSpec:
    """One role of a schema.

    Args:
        role: One of `ROLES`.
        kind: "image" (a file path, bytes, a PIL image or a `datasets.Image` cell) or "text".
        candidates: Column names tried in order when `DataSourceConfig.columns` does not name one.
        required: Whether a source without the column is rejected at construction.
    """

    role: str
    kind: Literal["image", "text"]
    candidates: tuple[str, ...]
    required: bool = True


@dataclass(frozen=True)
class Schema:
    """A dataset layout and how it becomes examples.

    Args:
        name: The value of `DataSourceConfig.schema`.
        description: One line for reports.
        columns: The roles read from the source.
        derived_condition: How the condition is made when no column holds it: a function of the target
            (`mtu.data.conditions`: `degraded`, the SR input; `masked`, the target with the mask's region blanked;
            a plug-in's own), or None.
        webdataset_layout: The member names of one sample in a tar shard, for docs and reports.
    """

    name: str
    description: str
    columns: tuple[ColumnSpec, ...]
    derived_condition: Callable | None = None
    webdataset_layout: str = ""

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(spec.role for spec in self.columns)

    @property
    def provides_condition(self) -> bool:
        return self.derived_condition is not None or "condition" in self.roles

    @property
    def provides_mask(self) -> bool:
        return "mask" in self.roles

    def spec(self, role: str) -> ColumnSpec:
        for spec in self.columns:
            if spec.role == role:
                return spec
        raise ValueError(f"schema {self.name!r} has no role {role!r}; its roles: {list(self.roles)}.")


# "file_name": the image column of Hugging Face `imagefolder` metadata.jsonl files.
_IMAGE = ("image", "file_name", "jpg", "png", "jpeg", "webp")

# The schemas by name (`mtu.registry.Registry`, the mechanism of the task and format registries too); installed
# packages announce theirs in the entry-point group `mtu.data_schemas` (a `Schema`, or a module that registers).
SCHEMA_REGISTRY = Registry("schema", "mtu.data_schemas", add_loaded=lambda schema: register_schema(schema))
SCHEMAS: dict[str, Schema] = SCHEMA_REGISTRY.items
_BUILTIN_SCHEMAS = (
    Schema("coco_captions", "image + several captions; one caption is drawn per epoch (App. A.1)", (
        ColumnSpec("target", "image", _IMAGE),
        ColumnSpec("prompt", "text", ("captions", "caption", "sentences_raw", "sentences", *_PROMPT_NAMES)),
    ), webdataset_layout="KEY.jpg + KEY.json {'captions': [...]} (or KEY.txt with one caption)"),
    Schema("instructpix2pix", "input image + instruction -> edited image; one of several targets per epoch", (
        ColumnSpec("condition", "image", ("original_image", "input_image", "input", "source_image")),
        ColumnSpec("target", "image", ("edited_image", "output_image", "output", "target_image")),
        ColumnSpec("prompt", "text", ("edit_prompt", *_INSTRUCTION_NAMES)),
        ColumnSpec("input_caption", "text", ("input_caption", "original_prompt"), required=False),
        ColumnSpec("output_caption", "text", ("output_caption", "edited_prompt"), required=False),
    ), webdataset_layout="KEY.original_image.png + KEY.edited_image.png (or KEY.edited_image.0.png, .1.png, ... "
                         "for several targets) + KEY.json {'edit_prompt', 'input_caption'?, 'output_caption'?}"),
    Schema("gqa_inpaint", "source image + 'remove the X' -> image without the object (GQA-Inpaint)", (
        ColumnSpec("condition", "image", ("source_image", "source", "input_image", "input")),
        ColumnSpec("target", "image", ("target_image", "target", "inpainted_image", "output_image", "output")),
        ColumnSpec("prompt", "text", _INSTRUCTION_NAMES),
    ), webdataset_layout="KEY.source_image.png + KEY.target_image.png + KEY.json {'instruction'} (or KEY.txt)"),
    Schema("mask_inpaint", "image + mask (white = fill) + prompt; the condition is the masked image", (
        ColumnSpec("target", "image", _IMAGE),
        ColumnSpec("mask", "image", ("mask", "mask_image")),
        ColumnSpec("prompt", "text", _PROMPT_NAMES),
    ), derived_condition=masked, webdataset_layout="KEY.png + KEY.mask.png + KEY.txt (or KEY.json {'prompt'})"),
    Schema("sr_highres", "high-resolution image; the low-resolution input is degraded on the fly", (
        ColumnSpec("target", "image", (*_IMAGE, "hr", "high_res")),
    ), derived_condition=degraded, webdataset_layout="KEY.png (or KEY.jpg)"),
    Schema("captions", "generic image + text pairs", (
        ColumnSpec("target", "image", _IMAGE),
        ColumnSpec("prompt", "text", _PROMPT_NAMES),
    ), webdataset_layout="KEY.jpg + KEY.txt (or KEY.json {'text'})"),
)


def register_schema(schema: Schema) -> Schema:
    """Makes `schema` a value of every file source's `schema`; registering the same one again is a no-op.

    Raises:
        InputError: when another schema of that name is registered already.
    """
    if not isinstance(schema, Schema):
        raise InputError(f"must be a Schema, got {type(schema).__name__}.", field="schema")
    SCHEMA_REGISTRY.put(schema.name, schema, conflict=lambda known: InputError(
        f"schema {schema.name!r} is registered already.", field="schema.name"))
    return schema


for _schema in _BUILTIN_SCHEMAS:
    register_schema(_schema)


def available_schemas() -> tuple[str, ...]:
    """Names of every registered schema, those of installed plug-ins included."""
    return SCHEMA_REGISTRY.names()


def get_schema_or_none(name) -> Schema | None:
    return SCHEMA_REGISTRY.get(name) if isinstance(name, str) else None


def get_schema(name: str) -> Schema:
    """Returns the schema called `name`, or raises naming the known ones."""
    schema = SCHEMA_REGISTRY.get(name)
    if schema is None:
        raise InputError(f"unknown schema {name!r}; supported: {', '.join(SCHEMA_REGISTRY.names())}.",
                         field="schema")
    return schema


def resolve_columns(schema: Schema, available: list[str], overrides: dict[str, str] | None = None) -> dict:
    """Maps each role of `schema` to a column of the source.

    Args:
        schema: The source's schema.
        available: Column names the source has.
        overrides: role -> column name, taking precedence over the schema's candidates.

    Returns:
        role -> column name for every required role and every optional role found.

    Raises:
        InputError: naming the missing column, the schema and the columns found.
    """
    overrides = overrides or {}
    mapping = {}
    for spec in schema.columns:
        if spec.role in overrides:
            column = overrides[spec.role]
            if column not in available:
                raise InputError(f"column {column!r} (given for role {spec.role!r}) is missing; schema "
                                 f"{schema.name!r}; columns found: {sorted(available)}.", field="columns")
            mapping[spec.role] = column
            continue
        found = next((name for name in spec.candidates if name in available), None)
        if found is not None:
            mapping[spec.role] = found
        elif spec.required:
            raise InputError(
                f"schema {schema.name!r} needs a {spec.role!r} column, named one of {list(spec.candidates)}, "
                f"but it is missing; columns found: {sorted(available)}. Name it with "
                f"`columns={{{spec.role!r}: '<column>'}}`."
            )
    return mapping


def check_compatible(task, schema: Schema) -> None:
    """Raises when `schema` cannot feed the image inputs of `task` (a `TaskSpec`)."""
    needs_condition = any(item in ("image", "masked_image") for item in task.image_inputs)
    needs_mask = "mask" in task.image_inputs
    fits = [
        other.name for other in SCHEMAS.values()
        if other.provides_condition == needs_condition and other.provides_mask == needs_mask
    ]
    if schema.name not in fits:
        raise InputError(
            f"{schema.name!r} does not fit task {task.name!r} (image inputs {list(task.image_inputs)}); "
            f"schemas that fit: {fits}.", field="schema"
        )


def schema_markdown(schema: Schema) -> str:
    """One schema's roles and the keys each is read from, as a markdown section (docs/DATA.md's form)."""
    lines = [f"### `{schema.name}`: {schema.description}", "", "| role | kind | keys tried, in order | required |",
             "|---|---|---|---|"]
    for spec in schema.columns:
        keys = ", ".join(f"`{name}`" for name in dict.fromkeys(spec.candidates))
        lines.append(f"| {spec.role} | {spec.kind} | {keys} | {'yes' if spec.required else 'no'} |")
    if schema.derived_condition:
        lines += ["", f"The condition image is made on the fly: {describe(schema.derived_condition)}."]
    lines += ["", f"webdataset sample: {schema.webdataset_layout}", ""]
    return "\n".join(lines)


def schemas_markdown() -> str:
    """Every registered schema (the task modules' own and plug-ins' included) as `schema_markdown` sections: what
    `mtu data schemas` prints; docs/DATA.md holds those of the paper's tasks (a test keeps them equal)."""
    available_tasks()  # the task modules register their schemas (e.g. a built-in task's own): list them all
    return "\n".join(schema_markdown(schema) for schema in SCHEMA_REGISTRY.items.values())
