"""The composition root: `create_app(settings)` builds every part and wires the routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sluice import __version__
from sluice.api import buckets, deployment, events, exposed, jobs, run, services, system, users, v2
from sluice.api.auth import Authenticator
from sluice.api.errors import install_error_handlers
from sluice.api.fast_upload import UploadGateway
from sluice.api.gateway import RunGateway
from sluice.api.oidc import OidcVerifier
from sluice.api.signing import UrlSigner, load_key
from sluice.db.database import Database
from sluice.engine.access import Caller
from sluice.engine.platform import Platform
from sluice.executors import load_executor
from sluice.settings import Settings
from sluice.spec.service import ServiceSpec
from sluice.storage.registry import StorageRouter, open_storage

log = logging.getLogger("sluice")


def create_server_app(settings: Settings, initial_services: Sequence[ServiceSpec] = ()) -> RunGateway:
    """What `sluice serve` runs: the app, with calls to handler services and object uploads
    answered in front of it, before FastAPI's own middleware (about a third of a warm call's and
    an upload's server time otherwise)."""
    app = create_app(settings, initial_services)
    uploads = UploadGateway(app, app.state.platform, app.state.auth, settings.max_upload)
    return RunGateway(uploads, app.state.platform, app.state.auth, settings.max_body)


def create_app(settings: Settings, initial_services: Sequence[ServiceSpec] = ()) -> FastAPI:
    """Build the app. `initial_services` are created or updated once the platform has started."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    password, _ = settings.ensure_admin_password()
    db = Database(settings.database_url)
    db.migrate()
    storage = StorageRouter(open_storage(settings.storage, settings.data_dir))
    platform = Platform(settings, db, storage, load_executor(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await platform.start()
        for spec in initial_services:
            _, created = await platform.apply_service(spec, owner=Caller(settings.admin_user, is_admin=True))
            log.info("service %s %s", spec.name, "created" if created else "updated")
        try:
            yield
        finally:
            await platform.stop()
            db.close()

    app = FastAPI(
        title="Sluice",
        version=__version__,
        description="Serverless AI inference, wire-compatible with OSCAR's v4 API.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.platform = platform
    reserved = frozenset({settings.admin_user})
    oidc = OidcVerifier(settings.oidc_issuers, reserved) if settings.oidc_issuers else None
    app.state.auth = Authenticator(settings.admin_user, password, db, oidc)
    app.state.signer = UrlSigner(load_key(settings.data_dir), settings.base_url)
    install_error_handlers(app)
    for module in (system, services, deployment, exposed, jobs, run, v2, buckets, events, users):
        app.include_router(module.router)
    app.include_router(system.fallback_router)
    return app
