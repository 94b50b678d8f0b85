"""Warm replicas: handler processes that keep a model loaded, and the pools that scale them."""
