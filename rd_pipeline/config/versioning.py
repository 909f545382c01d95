"""What data versions and section hashes include of a config: every field but those marked ``UNVERSIONED``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# Marks a setting that changes how a result is made but not the result (json_schema_extra of its Field):
# data versions and section hashes leave it out (see ``versioned_dump``).
UNVERSIONED: dict[str, Any] = {"versioned": False}


def versioned_dump(model: BaseModel) -> dict[str, Any]:
    """``model.model_dump(mode="json")`` without the fields marked ``UNVERSIONED`` (at any depth): what data
    versions hash, so such a setting can change without making results out of date."""
    dump = model.model_dump(mode="json")
    _drop_unversioned(model, dump)
    return dump


def _drop_unversioned(value: object, dump: object) -> None:
    if isinstance(value, list) and isinstance(dump, list):
        for item, item_dump in zip(value, dump, strict=True):
            _drop_unversioned(item, item_dump)
        return
    if not (isinstance(value, BaseModel) and isinstance(dump, dict)):
        return
    for name, field in type(value).model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("versioned") is False:
            dump.pop(name, None)
        elif name in dump:
            _drop_unversioned(getattr(value, name), dump[name])


def versioned_value(value: object) -> object:
    """A section (or list of them) as ``versioned_dump`` gives it; any other value as it is."""
    if isinstance(value, BaseModel):
        return versioned_dump(value)
    if isinstance(value, list):
        return [versioned_value(v) for v in value]
    return value
