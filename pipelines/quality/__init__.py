"""Data quality in Great Expectations: the suites (the single source of every check), the
checkpoints that validate silver and gold, their results and Data Docs, and the gates that stop
a command from reading a table whose last validation failed."""
