"""Map pydantic error locations onto the user's document and onto the model that rejected it."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pfactory.contracts.issues import Loc

KEY_MARKER = "[key]"


def data_path(loc: Loc, data: object) -> tuple[Loc, bool]:
    """Turn a pydantic ``loc`` into the path of keys and indices as they appear in ``data``.

    Union member tags that pydantic inserts (``'transformer'``, ``'between'``, ``'str'``) are
    dropped because they are not in the data; the last element is kept even when absent (a missing
    field in a mapping). ``[key]`` (an error about a dict key) is dropped and reported as the second value.

    Args:
        loc: the error location from pydantic.
        data: the document that was validated.

    Returns:
        The data path, and whether the error concerns a mapping key rather than its value.
    """
    path: list[str | int] = []
    current: object = data
    at_key = False
    for index, part in enumerate(loc):
        if part == KEY_MARKER:
            at_key = True
        elif _has(current, part):
            path.append(part)
            current = _child(current, part)
        elif index == len(loc) - 1 and isinstance(current, dict):
            path.append(part)
            current = None
    return tuple(path), at_key


def _has(data: object, part: str | int) -> bool:
    if isinstance(data, dict):
        return part in data
    return isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)


def _members(tp: Any) -> list[Any]:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        out: list[Any] = []
        for arg in get_args(tp):
            if arg is not type(None):
                out.extend(_members(arg))
        return out
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _literal_values(info: FieldInfo) -> tuple[Any, ...]:
    return get_args(info.annotation) if get_origin(info.annotation) is Literal else ()


def _pick(tp: Any, data: object) -> Any:
    """Choose the union member that ``data`` was meant to be."""
    members = _members(tp)
    models = [m for m in members if _is_model(m)]
    if len(models) <= 1:
        return models[0] if models else (members[0] if members else None)
    keys = set(data) if isinstance(data, dict) else set()

    def score(model: type[BaseModel]) -> int:
        total = 0
        for name, info in model.model_fields.items():
            alias = info.alias or name
            if alias in keys:
                total += 1
                assert isinstance(data, dict)
                if data[alias] in _literal_values(info):
                    total += 100
        return total

    return max(models, key=score)


def field_at(
    root: type[BaseModel], path: Loc, data: object
) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """Find the model that owns the last element of ``path``, and that field's info.

    Args:
        root: the config class the document was validated against.
        path: a data path (from `data_path`).
        data: the document.

    Returns:
        ``(model, field)``: the model at ``path[:-1]`` (None if the path leaves the models) and the
        field named by ``path[-1]`` (None if it is not a field of that model).
    """
    tp: Any = root
    current: object = data
    for part in path[:-1]:
        tp = _pick(tp, current)
        if _is_model(tp):
            info = _field_by_alias(tp, part)
            if info is None:
                return None, None
            tp = info.annotation
        elif get_origin(tp) in (list, tuple) and get_args(tp):
            tp = get_args(tp)[0]
        elif get_origin(tp) in (dict, typing.Mapping) and get_args(tp):
            tp = get_args(tp)[1]
        else:
            return None, None
        current = _child(current, part)
    owner = _pick(tp, current)
    if not _is_model(owner):
        return None, None
    return owner, _field_by_alias(owner, path[-1]) if path else None


def field_aliases(model: type[BaseModel]) -> list[str]:
    """Return the YAML spellings of a model's fields."""
    return [info.alias or name for name, info in model.model_fields.items()]


def _field_by_alias(model: type[BaseModel], key: str | int) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if (info.alias or name) == key:
            return info
    return None


def _child(data: object, part: str | int) -> object:
    if isinstance(data, dict):
        return data.get(part)
    if isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
        return data[part]
    return None
