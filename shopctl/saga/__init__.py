"""Durable sagas over the shop's services: log (SQLite), actions (adapters per service
kind), engine (forward, pivot, compensation, recovery). Nothing here prints."""
