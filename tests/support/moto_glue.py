"""moto's server with the one Glue behaviour the catalog tests need that moto
lacks: UpdateTable with a VersionId fails with ConcurrentModificationException
unless VersionId is the table's current version (AWS Glue API reference,
UpdateTable: "VersionId - The version ID at which to update the table
contents"; Apache Iceberg's Glue catalog relies on the same check for its
optimistic commits). Everything else is moto as it is.

Usage: moto_glue.py -H 127.0.0.1 -p PORT
"""

import sys

from moto.glue import responses
from moto.glue.exceptions import GlueClientError
from moto.server import main

_update_table = responses.GlueResponse.update_table


def update_table(self):
    wanted = self.parameters.get("VersionId")
    if wanted is not None:
        database = self.parameters.get("DatabaseName")
        name = self.parameters["TableInput"]["Name"]
        current = str(self.glue_backend.get_table(database, name)._current_version)
        if current != str(wanted):
            raise GlueClientError(
                "ConcurrentModificationException",
                f"Table {name} is at version {current}, not {wanted}",
            )
    return _update_table(self)


responses.GlueResponse.update_table = update_table

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
