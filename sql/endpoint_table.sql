--
-- One table drives every endpoint function; enkash_endpoints() shows it.
-- Paths we inferred from EnKash's documentation can be overridden by a
-- superuser without a rebuild.
--
SELECT sandbox.reset();
SELECT * FROM enkash_endpoints();

-- Every endpoint function is VOLATILE: each call is a request to EnKash
-- (only the listing above, and reading EnKash's times, are not).
SELECT p.proname, p.provolatile
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'enkash')
  AND p.provolatile <> 'v' AND p.proname NOT IN ('enkash_endpoints', 'answer_time');

-- Overriding an inferred path.
SET enkash.endpoint_paths = 'view_card_details = /card/view, order_physical_card=/physicalCard/order';
SELECT endpoint, path FROM enkash_endpoints() WHERE endpoint IN ('view_card_details', 'order_physical_card');
SELECT enkash_generate_card_otp('CASANDBOX1', 'EKCSANDBOX1') #>> '{}' AS otp_request \gset
SELECT * FROM sandbox.try(format($$SELECT enkash_view_card_details('CASANDBOX1', 'EKCSANDBOX1', %L, sandbox.otp(%L))$$,
                                 :'otp_request', :'otp_request'));
SELECT sandbox.api_requests('/card/view') AS requests_to_the_new_path;
RESET enkash.endpoint_paths;

-- Only inferred paths, and only clean ones.
SET enkash.endpoint_paths = 'load_balance=/elsewhere';
SET enkash.endpoint_paths = 'view_card_details=/view?x=1';
SET enkash.endpoint_paths = 'view_card_details=../../oauth/token';
SET enkash.endpoint_paths = 'view_card_details';

-- The paging members are configurable too; EnKash ignoring unknown members
-- answers the first page only, as the sandbox does here.
SELECT count(enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'PAGING-' || g)) AS loads
FROM generate_series(1, 3) g;
SET enkash.paging_fields = 'pageNumber,pageSize';
SET enkash.page_size = 1;
SELECT count(*) AS transactions_with_unknown_paging FROM enkash_transactions('CASANDBOX1');
SELECT b ? 'pageNumber' AND b ? 'pageSize' AS renamed_members_sent
FROM sandbox.wire_body('/transaction/all') b;
RESET enkash.page_size;
SET enkash.paging_fields = 'page';
RESET enkash.paging_fields;

-- A function's plan (endpoint and argument positions) is cached for the
-- backend's life and forgotten when pg_proc changes: renamed, the function
-- is no endpoint any more.
CREATE SCHEMA plan_cache;
CREATE FUNCTION plan_cache.enkash_get_card_account(card_account_id text) RETURNS jsonb
    AS 'enkash', 'enkash_endpoint_call' LANGUAGE C VOLATILE;
SELECT plan_cache.enkash_get_card_account('CASANDBOX1')->>'cardAccountId' AS account;
SELECT plan_cache.enkash_get_card_account('CASANDBOX1')->>'cardAccountId' AS account_again;
ALTER FUNCTION plan_cache.enkash_get_card_account(text) RENAME TO enkash_renamed;
SELECT plan_cache.enkash_renamed('CASANDBOX1');
DROP SCHEMA plan_cache CASCADE;
