"""Durable sagas over any service of a shop: log (SQLite), contract (how a step reaches
SERVICE.ACTION: declared in shop.yaml or by the kind's convention), participants (the
live HTTP, Nameko and gRPC calls), engine (forward, pivot, compensation, recovery),
inputs (a saga's declared input) and check (a saga's plan against the running shop).
Nothing here prints."""
