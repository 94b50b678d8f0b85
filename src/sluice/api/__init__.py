"""The HTTP API: OSCAR's routes and Sluice's own, assembled by `create_app`."""
