"""Shapes of the identity API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from app.identity.models import Role, TokenKind
from app.inventory.schemas import Schema

MAX_TOKEN_DAYS = 365

Username = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
]
Password = Annotated[SecretStr, Field(min_length=12, max_length=1024)]


class GrantSpec(Schema):
    role: Role
    sites: (
        Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
            Field(max_length=500),
        ]
        | None
    ) = Field(None, description="site slugs; null or absent for every site")


class GrantRead(BaseModel):
    role: Role
    sites: list[str] | None


class LoginBody(Schema):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[SecretStr, Field(min_length=1, max_length=1024)]


class LoginResult(BaseModel):
    username: str
    csrf_token: str
    grants: list[GrantRead]


class TokenResult(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class UserCreate(Schema):
    username: Username
    password: Password
    display_name: Annotated[str, StringConstraints(max_length=200)] = ""
    grants: Annotated[list[GrantSpec], Field(max_length=50)] = Field(default_factory=list)


class UserUpdate(Schema):
    password: Password | None = None
    current_password: Annotated[
        SecretStr | None,
        Field(
            min_length=1,
            max_length=1024,
            description="your present password: needed to change your own",
        ),
    ] = None
    display_name: Annotated[str, StringConstraints(max_length=200)] | None = None
    disabled: bool | None = None
    grants: Annotated[list[GrantSpec], Field(max_length=50)] | None = None


class UserRead(BaseModel):
    id: int
    username: str
    display_name: str
    disabled: bool
    grants: list[GrantRead]
    created_at: datetime
    last_login_at: datetime | None


class TokenCreate(Schema):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    role: Role
    sites: (
        Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
            Field(max_length=500),
        ]
        | None
    ) = Field(None, description="site slugs; null or absent for every site the creator holds")
    expires_in_days: Annotated[
        int,
        Field(
            ge=1,
            le=MAX_TOKEN_DAYS,
            description="every token expires, within a year; a token made with another API "
            "token expires no later than that one",
        ),
    ] = MAX_TOKEN_DAYS

    @field_validator("expires_in_days", mode="before")
    @classmethod
    def _expires(cls, value: object) -> object:
        """A token that never expires, or lives over a year, is refused with the rule itself."""
        if value is None or (isinstance(value, int | float) and value > MAX_TOKEN_DAYS):
            raise PydanticCustomError(
                "token_lifetime",
                "every token expires, at most {limit} days (one year) after it is made; "
                "ask for fewer days",
                {"limit": MAX_TOKEN_DAYS},
            )
        return value


class TokenRead(BaseModel):
    id: int
    name: str
    kind: TokenKind
    prefix: str
    user: str
    parent: int | None = Field(
        description="the API token this one was made with: it dies with it, and never outlives it"
    )
    grants: list[GrantRead]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    token: str = Field(description="shown once; store it now")
