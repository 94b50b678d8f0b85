"""The engine: durable job queue, dispatcher, reconciler, and the platform facade over them."""
