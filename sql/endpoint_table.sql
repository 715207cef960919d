--
-- One table drives every endpoint function; enkash_endpoints() shows it.
-- Paths we inferred from EnKash's documentation can be overridden by a
-- superuser without a rebuild.
--
SELECT sandbox.reset();
SELECT * FROM enkash_endpoints();

-- Every endpoint function is VOLATILE: each call is a request to EnKash
-- (only the listing above is not).
SELECT p.proname, p.provolatile
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'enkash')
  AND p.provolatile <> 'v' AND p.proname <> 'enkash_endpoints';

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
