"""A deterministic synthetic graph shaped like Twitter's engagement graph (see `generate`).

Modules: `schema` (tables, relations, their mix, argument checks), `sampling` (power-law,
community-structured edges), `generator` (the files, written then published whole), `growth` (the next version of a
graph: same ids and edges plus new ones).
"""

from tml.core.files import OutputExistsError
from tml.projects.twhin.tools.synthetic.generator import COMMUNITY_SCHEMA, generate
from tml.projects.twhin.tools.synthetic.growth import grow
from tml.projects.twhin.tools.synthetic.schema import (
    DEFAULT_RELATION_MIX,
    RELATIONS,
    SCHEMAS,
    TABLES,
    GraphSchema,
    parse_relation_mix,
)

__all__ = [
    "COMMUNITY_SCHEMA",
    "DEFAULT_RELATION_MIX",
    "RELATIONS",
    "SCHEMAS",
    "TABLES",
    "GraphSchema",
    "OutputExistsError",
    "generate",
    "grow",
    "parse_relation_mix",
]
