"""Pipedrive → any dlt destination. See `pipedrive_source`."""

from .context import EntityReport, RunContext, SyncOptions
from .entities import DEFAULT_ENTITIES, ENTITIES, ENTITY_BY_NAME, Entity, select_entities
from .source import build_resources, pipedrive_source

__all__ = [
    "DEFAULT_ENTITIES",
    "ENTITIES",
    "ENTITY_BY_NAME",
    "Entity",
    "EntityReport",
    "RunContext",
    "SyncOptions",
    "build_resources",
    "pipedrive_source",
    "select_entities",
]
