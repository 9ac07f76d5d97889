"""The amif application: command-line tool, Lightning modules, run bookkeeping and reports."""
