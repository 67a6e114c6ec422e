"""Policy text to a document: YAML or JSON (duplicate keys refused), then the model."""
from __future__ import annotations

import json
from typing import Any

import yaml

from mirroring.policy.model import MirrorPolicy
from mirroring.policy.validation import check_structure, describe_problems, validate_document
from namespace.cache import NamespaceView
from namespace.errors import InvalidInput

# -- parsing ----------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the
    last one silently, which would hide a typo such as two ``targets:`` blocks)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            dup = key in seen
        except TypeError:  # unhashable key: let the base constructor report it
            break
        if dup:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def parse_document(text: str) -> dict[str, Any]:
    """Decode YAML or JSON text into the raw document mapping (not yet validated)."""
    if not isinstance(text, str):
        raise InvalidInput("mirror policy must be text (YAML or JSON)")
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as exc:
            where = ""
            mark = getattr(exc, "problem_mark", None)
            if mark is not None:
                where = f" at line {mark.line + 1}, column {mark.column + 1}"
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InvalidInput(f"mirror policy is not valid YAML or JSON{where}: {problem}") from exc
    if not isinstance(data, dict):
        got = "empty document" if data is None else type(data).__name__
        raise InvalidInput(f"mirror policy must be a YAML or JSON mapping, got {got}")
    return data


def parse_policy(text: str) -> MirrorPolicy:
    """Parse YAML or JSON into a :class:`MirrorPolicy` (structure only; see
    :func:`load_and_validate` for the full check). Raises ``InvalidInput`` listing every
    structural problem."""
    data = parse_document(text)
    policy, problems = check_structure(data)
    if policy is None or problems:
        raise InvalidInput(describe_problems(data, problems))
    return policy



def load_and_validate(text: str, view: NamespaceView) -> MirrorPolicy:
    """Parse and validate ``text`` against ``view``; raises one ``InvalidInput`` whose
    message lists every problem, joined by ``"; "``."""
    return validate_document(parse_document(text), view)


