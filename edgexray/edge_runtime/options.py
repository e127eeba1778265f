"""Settings that are command-line options: declared once, on the settings' dataclass field.

A field made with `option` carries its help (and, when needed, its flag, metavar, choices,
whether it may be repeated or is required, and how its text is parsed) in the field's
metadata. Both command lines build their options from it: the device's argparse one
(edge_runtime/cli.py) and the host's Typer one (edgexray/cli/options.py), so a flag, its
default and its help are written in one place, next to the setting they describe.
"""

from __future__ import annotations

import dataclasses


def option(default=dataclasses.MISSING, help: str = "", flag: str | None = None, **facts):
    """A dataclass field that is also a command-line option.

    Args:
        default: the field's default (a list or dict default: give default_factory).
        help: the option's help text.
        flag: the option's name when it is not the field's with dashes ("--allow-ae").
        facts: metavar (str); choices (tuple of str); repeat (True: given several
            times, into a tuple); required (True); parse (a function from the text to the
            value, for a type that is not int, float, str, bool or Path); default_factory.
    """
    factory = facts.pop("default_factory", dataclasses.MISSING)
    metadata = {"help": help, "flag": flag, **facts}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field) -> str:
    """The command-line flag of a field made with `option`."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def options_of(config_class) -> list[dataclasses.Field]:
    """The fields of a settings dataclass that are command-line options, in order."""
    return [f for f in dataclasses.fields(config_class) if "help" in f.metadata]


def default_of(field: dataclasses.Field):
    """A field's default value (its factory's product when it has one)."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default
