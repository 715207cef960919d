--
-- The go-live check: green on a working setup, and each broken part named
-- in its own failed row, with a detail that says what to do and no secret.
--
SELECT sandbox.reset();

-- The worker and sender start with the server; wait until they show.
DO $$
BEGIN
    FOR i IN 1..300 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN (SELECT count(*) FROM pg_stat_activity
                   WHERE backend_type IN ('enkash worker', 'enkash sender')) = 2;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;

-- A working setup: every row ok, but TLS (the sandbox speaks plain http).
SELECT sandbox.token_requests() AS tokens_before, sandbox.api_requests() AS api_before \gset
SELECT name, status FROM enkash_check();
-- It made at most one token call and one read call.
SELECT sandbox.api_requests() - :api_before AS api_requests,
       sandbox.token_requests() - :tokens_before <= 1 AS at_most_one_token_call;
SELECT detail FROM enkash_check() WHERE name IN ('round_trip', 'tls');

-- A real card account is read.
SELECT status, detail FROM enkash_check('CASANDBOX1') WHERE name = 'round_trip';

-- Settings missing: named, and nothing is tried against EnKash.
SELECT sandbox.api_requests() AS api_before \gset
SET enkash.partner_id = '';
SET enkash.company_id = '';
SELECT name, status, detail FROM enkash_check() WHERE name IN ('settings', 'round_trip');
RESET enkash.partner_id;
RESET enkash.company_id;
SELECT sandbox.api_requests() - :api_before AS api_requests;

-- The credentials file: missing, readable by others, not the server's user's.
SELECT current_setting('enkash_test.work_dir') AS work \gset
SET enkash.credentials_file = '/nonexistent/enkash.conf';
SELECT status, detail FROM enkash_check() WHERE name = 'credentials_file';
SELECT set_config('enkash.credentials_file', :'work' || '/world-readable.conf', false) IS NOT NULL AS set;
SELECT status, replace(detail, :'work', '$WORK') AS detail FROM enkash_check() WHERE name = 'credentials_file';
SELECT set_config('enkash.credentials_file', :'work' || '/root-owned.conf', false) IS NOT NULL AS set;
SELECT status, replace(detail, :'work', '$WORK') AS detail FROM enkash_check() WHERE name = 'credentials_file';
RESET enkash.credentials_file;

-- EnKash unreachable: the round trip fails and says where it tried.
SET enkash.base_url = 'http://127.0.0.1:1/api/v0/partner/enKashCard';
SELECT name, status, detail FROM enkash_check() WHERE name IN ('round_trip');
RESET enkash.base_url;

-- Back to green.
SELECT count(*) FILTER (WHERE status = 'failed') AS failed FROM enkash_check();

-- No detail ever holds a secret from the credentials file.
SELECT count(*) AS details_with_a_secret
FROM enkash_check() c
WHERE position(sandbox.client_secret() IN c.detail) > 0;
