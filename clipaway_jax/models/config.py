"""Frozen config dataclasses that load published `config.json` files verbatim.

Field names are the diffusers/transformers config keys. Keys a config does not model are
accepted only when they hold the value that makes them irrelevant (None, False, or the value
listed in the class's `_FIXED`), so a config that needs a feature we do not implement fails
loudly instead of silently computing something else.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="ConfigBase")


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    # key -> the only value we support for a key that is not a field
    _FIXED: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "config") -> T:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in data.items():
            if key in names:
                kwargs[key] = _freeze(value)
            elif (
                key.startswith("_")
                or value is None
                or value is False
                or key in cls._FIXED
                and _freeze(value) == _freeze(cls._FIXED[key])
            ):
                continue
            else:
                raise ValueError(f"{source}: unsupported setting {key}={value!r} for {cls.__name__}")
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[T], path: str | Path) -> T:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: config file not found") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)
