"""Checks of the records a trainer is given: message lists with allowed roles, errors naming record and field."""

from __future__ import annotations

from collections.abc import Sequence


def check_messages(value: object, kind: str, where: str, field: str, roles: Sequence[str]) -> None:
    """Raise a ValueError naming ``where`` and ``field`` unless ``value`` is a list of such messages."""
    if not isinstance(value, list) or not value:
        raise ValueError(
            f"{kind} {where}: field {field!r} must be a non-empty list of messages, got {value!r:.80}"
        )
    for position, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValueError(
                f"{kind} {where}: field {field!r} message {position} must be a dict with a string 'content', "
                f"got {message!r:.80}"
            )
        if message.get("role") not in roles:
            raise ValueError(
                f"{kind} {where}: field {field!r} message {position} has role {message.get('role')!r}, "
                f"expected one of {list(roles)}"
            )


def check_records(records: Sequence[dict], kind: str, fields: dict[str, Sequence[str]]) -> None:
    """Check each record's fields are message lists with allowed roles; errors name the record and field."""
    if len(records) == 0:
        raise ValueError(f"no {kind} given: training needs at least one")
    for index, record in enumerate(records):
        where = f"#{index}"
        if not isinstance(record, dict):
            raise ValueError(f"{kind} {where} must be a dict, got {type(record).__name__}")
        for field, roles in fields.items():
            if field not in record:
                raise ValueError(f"{kind} {where} has no field {field!r} (fields: {sorted(record)})")
            check_messages(record[field], kind, where, field, roles)
