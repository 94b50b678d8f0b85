"""The package's front door: growing or shrinking it is a visible change."""

import sluice


def test_exported_names_are_pinned() -> None:
    assert sorted(sluice.__all__) == [
        "AsyncClient",
        "Client",
        "Conflict",
        "Forbidden",
        "InvalidInput",
        "InvocationFailed",
        "InvocationTimeout",
        "Job",
        "NotFound",
        "Overloaded",
        "PayloadTooLarge",
        "Record",
        "ServerError",
        "Service",
        "ServiceSpec",
        "SluiceError",
        "SpecError",
        "StorageIO",
        "Table",
        "Unauthorized",
        "__version__",
        "parse_fdl",
        "parse_service",
    ]
    for name in sluice.__all__:
        assert getattr(sluice, name) is not None
