"""The roster's rows: slotted, frozen dataclasses, one per table (DESIGN §4).

A province holds ~540,000 rows (issue 18): a pydantic model per row cost ~0.64 KB and most of
a 38 s load. A slotted dataclass costs ~56 bytes plus its strings, and pydantic still checks
them, in pydantic-core, a whole table's chunk per call (`etong.roster.check`). Unknown keys
are errors (`extra="forbid"`); rows never change once loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, ClassVar

from pydantic import ConfigDict, Field, StringConstraints

from etong.ids import ID_PATTERN

__all__ = ["ROW_TYPES", "Absence", "Community", "Grid", "Member", "Officer", "Station"]

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# Mobile (13800138000, +86 138 0013 8000) or landline (0574-87654321) numbers.
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 -]{2,31}$")]

_FORBID = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class Station:
    """A police station; its duty officer is the last step of every escalation chain."""

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID

    id: Annotated[Id, Field(description="Station id.")]
    name: Annotated[Name, Field(description="Display name, e.g. 庄市派出所.")]
    duty_officer: Annotated[Id, Field(description="The [[officers]] entry on duty.")]


@dataclass(frozen=True, slots=True)
class Community:
    """A residential community, belonging to one station."""

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID

    id: Annotated[Id, Field(description="Community id.")]
    name: Annotated[Name, Field(description="Display name, e.g. 北高教园社区.")]
    station: Annotated[Id, Field(description="The [[stations]] entry covering it.")]
    registrar: Annotated[
        Id | None,
        Field(description="Floating-population registrar ([[officers]] entry) on move-ins."),
    ] = None


@dataclass(frozen=True, slots=True)
class Absence:
    """A period an officer is away; both ends are included."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    from_: Annotated[date, Field(alias="from", description="First day away (inclusive).")]
    to: Annotated[date, Field(description="Last day away (inclusive).")]

    def __post_init__(self) -> None:
        # pydantic reports a ValueError raised here at the absence's own key.
        if self.from_ > self.to:
            raise ValueError(f"'from' ({self.from_}) is after 'to' ({self.to})")

    def covers(self, day: date) -> bool:
        """True when `day` falls within the absence, ends included."""
        return self.from_ <= day <= self.to


@dataclass(frozen=True, slots=True)
class Officer:
    """A community police officer (or registrar) with a terminal."""

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID

    id: Annotated[Id, Field(description="Officer id; names {p}/officer/{id}/inbox and /acks.")]
    name: Annotated[Name, Field(description="Display name.")]
    station: Annotated[Id, Field(description="The [[stations]] entry the officer belongs to.")]
    backup: Annotated[
        Id | None, Field(description="Who covers when this officer is absent or does not ack.")
    ] = None
    absent: Annotated[tuple[Absence, ...], Field(description="Periods away, inclusive.")] = ()
    # repr=False: a roster object in a log line must not carry a phone number in clear.
    phone: Annotated[Phone | None, Field(description="Contact number.")] = field(
        default=None, repr=False
    )

    def is_absent(self, day: date) -> bool:
        """True when one of the officer's absences covers `day`."""
        return any(absence.covers(day) for absence in self.absent)


@dataclass(frozen=True, slots=True)
class Grid:
    """A grid: its community, its officer, its head and its members."""

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID

    id: Annotated[Id, Field(description="Grid id; names the topics {p}/grid/{id}/...")]
    name: Annotated[Name, Field(description="Display name.")]
    community: Annotated[Id, Field(description="The [[communities]] entry it lies in.")]
    officer: Annotated[Id, Field(description="The [[officers]] entry receiving its reports.")]
    head: Annotated[Id, Field(description="The grid head, one of `members`.")]
    members: Annotated[
        tuple[Id, ...],
        Field(min_length=1, description="The [[members]] entries reporting for this grid."),
    ]


@dataclass(frozen=True, slots=True)
class Member:
    """A grid member with a handheld."""

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID

    id: Annotated[Id, Field(description="Member id; names the topic .../member/{id}/events.")]
    name: Annotated[Name, Field(description="Display name.")]
    phone: Annotated[Phone | None, Field(description="Contact number.")] = field(
        default=None, repr=False
    )


Row = Station | Community | Officer | Grid | Member

# Table name → row type, in the order a roster file usually lists them.
ROW_TYPES: dict[str, type[Row]] = {
    "stations": Station,
    "communities": Community,
    "officers": Officer,
    "grids": Grid,
    "members": Member,
}
