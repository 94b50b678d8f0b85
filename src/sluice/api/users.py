"""/v1/users: the accounts the admin creates for HTTP Basic (OIDC users need no account)."""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, field_validator

from sluice.api.auth import require_admin
from sluice.api.passwords import hash_password
from sluice.db import accounts
from sluice.engine.access import Caller
from sluice.errors import Conflict, InvalidInput, NotFound

router = APIRouter(tags=["users"])
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8


class NewUser(BaseModel):
    name: str
    password: str = Field(min_length=MIN_PASSWORD, max_length=1024)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
        return value


class NewPassword(BaseModel):
    password: str = Field(min_length=MIN_PASSWORD, max_length=1024)


@router.get("/v1/users")
async def list_users(request: Request, _: Caller = Depends(require_admin)) -> dict[str, Any]:
    return {"users": await request.app.state.platform.db.call(accounts.user_names)}


@router.post("/v1/users", status_code=201)
async def add_user(body: NewUser, request: Request, _: Caller = Depends(require_admin)) -> dict[str, Any]:
    if body.name == request.app.state.settings.admin_user:
        raise InvalidInput(f"'{body.name}' is the admin's name")
    hashed = hash_password(body.password)
    if not await request.app.state.platform.db.call(accounts.add_user, body.name, hashed, time.time()):
        raise Conflict(f"user '{body.name}' already exists")
    return {"name": body.name}


@router.put("/v1/users/{name}", status_code=204)
async def set_password(
    name: str, body: NewPassword, request: Request, _: Caller = Depends(require_admin)
) -> Response:
    if not await request.app.state.platform.db.call(
        accounts.set_password, name, hash_password(body.password)
    ):
        raise NotFound(f"user '{name}' not found")
    return Response(status_code=204)


@router.delete("/v1/users/{name}", status_code=204)
async def remove_user(name: str, request: Request, _: Caller = Depends(require_admin)) -> Response:
    """Remove the account; services and buckets it owns stay, managed by the admin."""
    platform = request.app.state.platform
    if name not in await platform.db.call(accounts.user_names):
        raise NotFound(f"user '{name}' not found")
    await platform.forget_user(name)  # first: if the store refuses, the account stays to retry
    await platform.db.call(accounts.remove_user, name)
    return Response(status_code=204)
