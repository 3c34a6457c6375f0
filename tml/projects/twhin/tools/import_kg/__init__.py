"""Import a knowledge graph of named triples into tml-twhin's parquet edges and a runnable config.

Public KG benchmarks (and most real exports) come as text files of ``head, relation, tail`` names,
while the trainer reads integer ``lhs, rel, rhs`` rows. This tool assigns the ids, keeps the
mapping so embeddings can be read back by name, and writes a config sized to the vocabulary.

Usage::

    python -m tml.projects.twhin.import_kg --train T [--valid V] [--test S] --out DIR
        [--operator NAME] [--dim D] [--types FILE] [--delimiter TAB|COMMA] [--header]
        [--overwrite]

Output under DIR (written to a temporary directory, then renamed into place):

* ``train/``, ``valid/``, ``test/``: ``part-NNNNN.parquet`` with int64 columns ``lhs``, ``rel``,
  ``rhs`` (``rel`` indexes ``model.relations``);
* ``vocab/<table>.parquet``: ``id`` (int64), ``name`` (string), one file per entity table;
* ``relations.parquet``: ``id``, ``name``, ``lhs``, ``rhs`` (table names), ``count`` (train edges);
* ``config.yaml``: a training config that validates against ``TwhinConfig``.

Ids follow the first appearance of a name over train, then valid, then test (heads before tails
within a row), so the same files always give the same ids. The input is streamed in blocks; memory
grows with the vocabulary, not with the number of edges.

The data flow, one module per step:

* `reading`: text files -> blocks of string columns (`read_rows`), the types file (`read_types`);
* `vocabulary`: names -> ids per table and per relation, one table pair per relation;
* `writing`: ids -> parquet edges, vocab and relations; the finished directory put in place;
* `config_file`: `default_training_settings` and the generated, validated ``config.yaml``;
* `importer`: `import_kg`, which runs the steps above in order.

The command line is `tml/projects/twhin/import_kg.py`.

Module constants are read where they are defined: patch ``writing.ROW_GROUP_SIZE`` or
``reading.read_rows``, not the names re-exported here.
"""

from tml.core.files import OutputExistsError
from tml.projects.twhin.data.files import EDGE_SCHEMA
from tml.projects.twhin.tools.import_kg.config_file import default_training_settings
from tml.projects.twhin.tools.import_kg.errors import KgImportError
from tml.projects.twhin.tools.import_kg.importer import SPLITS, format_summary, import_kg
from tml.projects.twhin.tools.import_kg.reading import (
    DEFAULT_BLOCK_SIZE,
    DELIMITERS,
    EDGE_COLUMNS,
    TYPE_COLUMNS,
)
from tml.projects.twhin.tools.import_kg.vocabulary import DEFAULT_TABLE
from tml.projects.twhin.tools.import_kg.writing import (
    RELATION_SCHEMA,
    ROW_GROUP_SIZE,
    ROWS_PER_FILE,
    VOCAB_SCHEMA,
)

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_TABLE",
    "DELIMITERS",
    "EDGE_COLUMNS",
    "EDGE_SCHEMA",
    "RELATION_SCHEMA",
    "ROWS_PER_FILE",
    "ROW_GROUP_SIZE",
    "SPLITS",
    "TYPE_COLUMNS",
    "VOCAB_SCHEMA",
    "KgImportError",
    "default_training_settings",
    "format_summary",
    "import_kg",
    "OutputExistsError",
]
