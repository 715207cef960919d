--
-- make installcheck against a running server set up as the README's Install
-- says: what can be checked there without calling EnKash.  Runs in
-- pg_regress's own database (contrib_regression), which is not
-- enkash.database, so no money call can be made from it.
--
\set VERBOSITY terse
-- Stop at once if this database is where money moves: nothing below may reach EnKash.
SELECT current_database() <> current_setting('enkash.database', true) AS not_enkash_database \gset
\if :not_enkash_database
\else
\echo 'this is enkash.database: server_check runs nowhere money can move'
\quit
\endif
SET client_min_messages = error;   -- the notice that this is not enkash.database
CREATE EXTENSION enkash;
RESET client_min_messages;

-- The library is preloaded and of the version the extension installed.
SELECT current_setting('shared_preload_libraries') ~ '(^|[ ,])"?enkash"?($|[ ,])' AS preloaded;
SELECT extversion = (SELECT default_version FROM pg_available_extensions WHERE name = 'enkash')
    AS installed_version_is_default
FROM pg_extension WHERE extname = 'enkash';

-- The background workers run (the worker and the sender in enkash.database).
SELECT backend_type FROM pg_stat_activity
WHERE backend_type IN ('enkash launcher', 'enkash worker', 'enkash sender')
GROUP BY backend_type ORDER BY backend_type;

-- Nothing is callable by PUBLIC.
SELECT count(*) AS functions_public_may_call
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'enkash'
WHERE has_function_privilege('public', p.oid, 'EXECUTE');

-- Bad input is refused before anything is sent.
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', -5, 'R1');
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10.005, 'R1');
SELECT enkash_get_card_account(NULL);

-- Money is not moved from a database other than enkash.database.
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'R1');

DROP EXTENSION enkash;
