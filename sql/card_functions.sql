--
-- Every endpoint function: one success, bad input refused before sending
-- (no request reaches EnKash), and an upstream failure reported with its
-- SQLSTATE.  The scenario tests show the results in context; this file is
-- the checklist.
--
SELECT sandbox.reset();
SELECT sandbox.api_requests() AS requests_before \gset

-- Bad input, refused before anything is sent: what EnKash's pages document
-- as invalid (formats they leave open, such as a PIN block's or an OTP's,
-- are EnKash's to judge).
SELECT * FROM sandbox.try($$SELECT enkash_create_card_account('Acme', 'PMSANDBOX1', 'Cards', 'CREDIT', 'a@b.in', '9876543210', 'K1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_create_card_account('Acme', 'PMSANDBOX1', 'Cards', 'MEAL', 'a@b.in', '9876543210', NULL)$$);
SELECT * FROM sandbox.try($$SELECT enkash_create_prepaid_card('CASANDBOX1', 'Ravi', 'Kumar', 'ravi@acme.in', '98765', 'K2')$$);
SELECT * FROM sandbox.try($$SELECT enkash_create_prepaid_card('CASANDBOX1', 'Ravi', 'Kumar', 'not-an-email', '9876500001', 'K2')$$);
SELECT * FROM sandbox.try($$SELECT enkash_create_prepaid_card('CASANDBOX1', 'Ravi', NULL, idempotency_key => 'K2')$$);
SELECT * FROM sandbox.try($$SELECT enkash_create_gift_card('CAGIFT1', 'Ravi', 'Kumar', 'ravi@acme.in', '9876500001', NULL, 'K3')$$);
SELECT * FROM sandbox.try($$SELECT enkash_set_card_pin('CASANDBOX1', 'EKCSANDBOX1', '   ')$$);
SELECT * FROM sandbox.try($$SELECT enkash_generate_card_otp('CASANDBOX1', 'EKCSANDBOX1', 'LOGIN_OTP')$$);
SELECT * FROM sandbox.try($$SELECT enkash_view_card_details('CASANDBOX1', 'EKCSANDBOX1', 'OTPREQ1', NULL)$$);
SELECT * FROM sandbox.try($$SELECT enkash_set_card_controls('CASANDBOX1', ARRAY[]::text[])$$);
SELECT * FROM sandbox.try($$SELECT enkash_set_card_controls('CASANDBOX1', array_fill('EKC1'::text, ARRAY[101]))$$);
SELECT * FROM sandbox.try($$SELECT enkash_set_card_controls('CASANDBOX1', ARRAY['EKCSANDBOX1'], per_txn_limit => -1)$$);
SELECT * FROM sandbox.try($$SELECT enkash_set_card_controls('CASANDBOX1', ARRAY['EKCSANDBOX1'], dtd_count => -1)$$);
SELECT * FROM sandbox.try($$SELECT enkash_get_card_controls('CASANDBOX1', NULL)$$);
SELECT * FROM sandbox.try($$SELECT enkash_request_card_replacement('EKCSANDBOX1', 'K4', otp_medium => 'EMAIL')$$);
SELECT * FROM sandbox.try($$SELECT enkash_block_card('CASANDBOX1', 'EKCSANDBOX1', 'X')$$);
SELECT * FROM sandbox.try($$SELECT enkash_block_card('CASANDBOX1', 'EKCSANDBOX1', 'L', otp_medium => NULL)$$);
SELECT * FROM sandbox.try($$SELECT enkash_order_physical_card('CASANDBOX1', 'EKCSANDBOX1', '12 MG Road', 'Bengaluru', 'Karnataka', NULL, 'K5')$$);
SELECT * FROM sandbox.try($$SELECT enkash_get_card('')$$);
SELECT * FROM sandbox.try($$SELECT enkash_get_transaction('CASANDBOX1', NULL, 'EKCSANDBOX1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_get_transaction('CASANDBOX1', 'FN-1', NULL)$$);
SELECT * FROM sandbox.try($$SELECT * FROM enkash_transactions('CASANDBOX1', card_transaction_type => 'XX')$$);
SELECT * FROM sandbox.try($$SELECT * FROM enkash_transactions('CASANDBOX1', amount_from => 100, amount_to => 10)$$);
SELECT * FROM sandbox.try($$SELECT * FROM enkash_transactions('CASANDBOX1', txn_date_from => '2026-12-01', txn_date_to => '2026-11-01')$$);
SELECT * FROM sandbox.try($$SELECT enkash_call('no_such_endpoint', '{}')$$);
SELECT * FROM sandbox.try($$SELECT enkash_call('get_card_account', '[1]')$$);
SELECT * FROM sandbox.try($$SELECT enkash_call('create_card_account', '{"companyName": "Acme"}')$$);
SELECT * FROM sandbox.try($$SELECT enkash_call('load_balance', '{"amount": 10}')$$);
-- A secret is never quoted back, not even when it is wrong.
SELECT * FROM sandbox.try_detail($$SELECT enkash_set_card_pin('CASANDBOX1', 'EKCSANDBOX1', repeat('7', 1001))$$);
SELECT sandbox.api_requests() - :requests_before AS requests_sent;

-- Successes.
SELECT enkash_create_card_account('Acme', 'PMSANDBOX1', 'Fuel cards', 'FUEL', 'fin@acme.in', '9876543210', 'FN-ACCOUNT') ? 'cardAccountId' AS create_card_account;
SELECT enkash_create_prepaid_card('CASANDBOX1', 'Ravi', 'Kumar', 'ravi@acme.in', '9876500001', 'FN-CARD', load_amount => 100)->>'otbBalance' AS create_prepaid_card;
SELECT enkash_create_gift_card('CAGIFT1', 'Lata', 'Shah', 'lata@acme.in', '9876500002', load_amount => 750, idempotency_key => 'FN-GIFT', middle_name => 'M')->>'otbBalance' AS create_gift_card;
SELECT enkash_set_card_pin('CASANDBOX1', 'EKCSANDBOX1', '041234FEDCBA9876') AS set_card_pin;
SELECT enkash_generate_card_otp('CASANDBOX1', 'EKCSANDBOX1') #>> '{}' LIKE 'OTPREQ%' AS generate_card_otp;
SELECT enkash_set_card_controls('CASANDBOX1', ARRAY['EKCSANDBOX1', 'EKCSANDBOX2'], pos_allowed => false) AS set_card_controls;
SELECT enkash_get_card_controls('CASANDBOX1', 'EKCSANDBOX2')->>'posAllowed' AS get_card_controls;
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'FN-1') AS load_balance;
SELECT enkash_get_card_account('CASANDBOX1')->>'availableCardBalance' AS get_card_account;
SELECT enkash_get_card('CASANDBOX1', 'EKCSANDBOX1')->'data'->0->>'otbBalance' AS get_card;
SELECT enkash_get_transaction('CASANDBOX1', 'FN-1', 'EKCSANDBOX1')#>>'{data,0,principalAmount}' AS get_transaction;
SELECT count(*) AS transactions FROM enkash_transactions('CASANDBOX1', pg_reference_numbers => ARRAY['FN-1']);
SELECT enkash_order_physical_card('CASANDBOX1', 'EKCSANDBOX1', '12 MG Road', 'Bengaluru', 'Karnataka', '560001', 'FN-ORDER') #>> '{}' LIKE 'PCO%' AS order_physical_card;
SELECT enkash_block_card('CASANDBOX1', 'EKCSANDBOX2', 'L', reason => 'Lost wallet') AS block_card;
SELECT enkash_request_card_replacement('EKCSANDBOX2', 'FN-REPLACE', card_account_id => 'CASANDBOX1') #>> '{}' LIKE 'EKC%' AS request_card_replacement;
SELECT enkash_get_card('CASANDBOX1', 'EKCSANDBOX2')->'data'->0->'cardStatus'->>'label' AS replaced_card_status;
SELECT enkash_call('get_card', '{"companyId": "CEKSANDBOX1", "cardAccountId": "CASANDBOX1"}')->'data'->0->>'enKashCardId' AS call;

-- Upstream failures: EnKash refusing, or failing.
SELECT * FROM sandbox.try($$SELECT enkash_create_card_account('Acme', 'PMSANDBOX1', 'Cards', 'MEAL', 'a@b.in', '9876543210', 'UP-1', company_id => 'CEKOTHER')$$);
SELECT * FROM sandbox.try($$SELECT enkash_create_prepaid_card('CANOSUCH', 'Ravi', 'Kumar', 'ravi@acme.in', '9876500001', 'UP-2')$$);
SELECT * FROM sandbox.try($$SELECT enkash_create_gift_card('CASANDBOX1', 'Ravi', 'Kumar', 'ravi@acme.in', '9876500001', 5000000, 'UP-3')$$);
SELECT * FROM sandbox.try($$SELECT enkash_set_card_pin('CASANDBOX1', 'EKCNOSUCH', '041234FEDCBA9876')$$);
SELECT * FROM sandbox.try($$SELECT enkash_generate_card_otp('CASANDBOX1', 'EKCNOSUCH')$$);
SELECT * FROM sandbox.try($$SELECT enkash_view_card_details('CASANDBOX1', 'EKCSANDBOX1', 'OTPREQNOSUCH', '123456')$$);
SELECT * FROM sandbox.try($$SELECT enkash_set_card_controls('CANOSUCH', ARRAY['EKCSANDBOX1'])$$);
SELECT * FROM sandbox.try($$SELECT enkash_get_card_controls('CASANDBOX1', 'EKCNOSUCH')$$);
SELECT * FROM sandbox.try($$SELECT enkash_request_card_replacement('EKCNOSUCH', 'UP-4')$$);
SELECT * FROM sandbox.try($$SELECT enkash_block_card('CASANDBOX1', 'EKCSANDBOX2', 'UL')$$);
SELECT * FROM sandbox.try($$SELECT enkash_order_physical_card('CASANDBOX1', 'EKCSANDBOX1', '12 MG Road', 'Bengaluru', 'Karnataka', '560001', 'UP-5')$$);
SELECT * FROM sandbox.try($$SELECT enkash_get_card('CASANDBOX1', 'EKCNOSUCH')$$);
SELECT enkash_get_transaction('CASANDBOX1', 'NEVER-SENT', 'EKCSANDBOX1') AS never_sent;
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CAGIFT1', 'EKCGIFT1', 10, 'FN-GIFT')$$);
SELECT sandbox.fault('{"fail": {"status": 503, "count": 1}}');
SELECT * FROM sandbox.try($$SELECT * FROM enkash_transactions('CASANDBOX1')$$);
SELECT sandbox.fault('{"fail": {"status": 502, "count": 1}}');
SELECT * FROM sandbox.try($$SELECT enkash_get_card_account('CASANDBOX1')$$);
SELECT sandbox.fault('{"fail": {"status": 403, "count": 1}}');
SELECT * FROM sandbox.try($$SELECT enkash_call('get_card', '{"companyId": "CEKSANDBOX1", "cardAccountId": "CASANDBOX1"}')$$);
