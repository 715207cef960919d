-- pgbench script: the control row, PostgreSQL and pgbench alone (no EnKash call).
SELECT 1;
