"""Reading YAML strictly: every config, search space and ablation spec goes through here.

PyYAML accepts things that silently change what runs: a key given twice (the second
`optim:` block replaces the first), an empty file (every default), a binary file read as
text. Each of these is refused here with one line naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from contrastlab.errors import ConfigError


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if first is not None:
                raise ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice (lines {first} and {line}): each key once",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def loads(text: str, source: str) -> Any:
    """Parse YAML text strictly; errors name `source` and the line."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "document"
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(source, where, f"valid YAML ({problem})") from None


def read_text(path: Path) -> str:
    """A file's text, refused when it is missing, a folder, binary or not UTF-8."""
    if path.is_dir():
        raise ConfigError(str(path), "", "a YAML file (this is a folder)")
    if not path.is_file():
        raise ConfigError(str(path), "", "an existing YAML file (file not found)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(str(path), "", f"a readable YAML file ({err.strerror})") from None
    if b"\0" in data:
        raise ConfigError(str(path), "", "a YAML text file (this file is binary)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(str(path), f"line {line}", "UTF-8 text (found a byte that is not UTF-8)") from None


def read_yaml(path: str | Path) -> Any:
    """Read one YAML file strictly; an empty file (or only comments) is an error."""
    path = Path(path)
    data = loads(read_text(path), str(path))
    if data is None:
        raise ConfigError(str(path), "", "a YAML mapping (the file is empty)")
    return data


__all__ = ["StrictLoader", "loads", "read_text", "read_yaml"]
