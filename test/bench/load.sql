-- pgbench script: one card load per transaction, each under a new
-- idempotency key (unique_reference_number): B-<run>-<client>-<random>.
-- :run is set with pgbench -D run=N, different for every run, so that no key
-- of an earlier run is replayed from the extension's key table.
\set r random(1, 9000000000000000000)
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'B-' || :run || '-' || :client_id || '-' || :r);
