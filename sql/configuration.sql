--
-- Configuration mistakes are caught with a message that says what to set,
-- and URLs that would send the token somewhere unsafe are refused.
--
SELECT sandbox.reset();
SELECT sandbox.api_requests() AS api_requests_before \gset

-- URLs: https://, or http:// only to loopback; no credentials inside.
SET enkash.base_url = 'http://example.com/api/v0/partner/enKashCard';
SET enkash.base_url = 'https://user:secret@pay.enkash.in/api/v0/partner/enKashCard';
SET enkash.token_url = 'ftp://127.0.0.1/oauth/token';
SET enkash.base_url = 'not a url';
SET enkash.base_url = 'https://pay.enkash.in/api/v0/partner/enKashCard';
-- The host alone stands for the card API under it.
SET enkash.base_url = 'https://pay.enkash.in';
SHOW enkash.base_url;
SET enkash.base_url = 'https://pay.enkash.in/';
SHOW enkash.base_url;
SELECT replace(set_config('enkash.base_url', current_setting('enkash_test.sandbox_url'), false),
               current_setting('enkash_test.sandbox_url'), '$SANDBOX') AS host_only;
SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId' AS card_account;
RESET enkash.base_url;

-- Missing settings.
SET enkash.base_url = '';
SELECT enkash_get_card_account('CASANDBOX1');
RESET enkash.base_url;
SET enkash.partner_id = '';
SELECT enkash_get_card_account('CASANDBOX1');
RESET enkash.partner_id;
SET enkash.company_id = '';
SELECT enkash_get_card_account('CASANDBOX1');
SELECT enkash_get_card_account('CASANDBOX1', company_id => 'CEKSANDBOX1')->>'companyId' AS company;
RESET enkash.company_id;
SELECT sandbox.api_requests() - :api_requests_before AS api_requests;

-- The credentials file: missing, readable by others (mode 644 or 640), not
-- owned by the server's OS user (root, mode 600), incomplete, malformed, a
-- symbolic link, with a line that is not a known key (a wrapped secret: it is
-- not echoed).
SET enkash.credentials_file = '/nonexistent/enkash.conf';
SELECT enkash_get_card_account('CASANDBOX1');
SELECT current_setting('enkash_test.work_dir') AS work \gset
SELECT f.name AS file, d.*
FROM unnest(ARRAY['world-readable', 'group-readable', 'root-owned', 'incomplete', 'malformed',
                  'symlink', 'unknown-key'])
     WITH ORDINALITY AS f(name, n),
     sandbox.try_detail(format($$SELECT set_config('enkash.credentials_file', %L, true),
                                        enkash_get_card_account('CASANDBOX1')$$,
                               :'work' || '/' || f.name || '.conf')) d
ORDER BY f.n;
RESET enkash.credentials_file;

-- None of this reached EnKash (the calls above with company_id and with the
-- host-only URL did).
SELECT sandbox.api_requests() - :api_requests_before AS api_requests;

-- Settings that steer requests are for superusers only.
CREATE ROLE enkash_analyst;
SET ROLE enkash_analyst;
SET enkash.base_url = 'https://evil.example/api';
SET enkash.credentials_file = '/tmp/other.conf';
SET enkash.encrypt = off;
SHOW enkash.base_url;
SHOW enkash.credentials_file;
SELECT name, setting FROM pg_settings WHERE name LIKE 'enkash.%url%' OR name = 'enkash.credentials_file';
SELECT enkash_get_card_account('CASANDBOX1');
RESET ROLE;
DROP ROLE enkash_analyst;
