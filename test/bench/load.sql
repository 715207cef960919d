-- pgbench script: one card load per transaction, each under a new
-- idempotency key (unique_reference_number): B-<run>-<client>-<random>.
-- :run is set with pgbench -D run=N, different for every run, so that no key
-- of an earlier run is replayed from the extension's key table.
\set r random(1, 9000000000000000000)
-- The parts are cast to text: text || integer is a SQL function that the
-- planner inlines, parsing and analysing its body at every call, which would
-- bill a load for ~100 us of pgbench's own expression.
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'B-' || :run::text || '-' || :client_id::text || '-' || :r::text);
