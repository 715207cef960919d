--
-- Every endpoint's body on the wire, as EnKash's pages document it: a typical
-- call, the body the sandbox received decrypted with the openssl command line
-- (not our code), and its members compared with the members of the page's
-- request (docs.enkash.com/<page>, listed with each call).  Then dates: sent
-- in UTC with Z, read from answers as IST whatever the session's time zone.
--
SELECT sandbox.reset();

-- Members sent that the page does not list, and members it lists that this
-- typical call leaves out (optional ones).
CREATE FUNCTION sandbox.vs_docs(body jsonb, documented text[],
                                OUT not_in_docs text[], OUT not_sent text[])
LANGUAGE sql AS $$
    SELECT ARRAY(SELECT k FROM jsonb_object_keys(body) k WHERE k <> ALL (documented) ORDER BY k),
           ARRAY(SELECT d FROM unnest(documented) d WHERE NOT body ? d ORDER BY d)
$$;

-- Create Card Account (api-8990350)
SELECT enkash_create_card_account(company_name => 'Wire Traders', plan_master_id => 'PMSANDBOX1',
    account_title => 'Wire cards', account_type => 'CORPORATE',
    email => 'admin@wire.example', mobile => '9876543210', idempotency_key => 'WB-ACC')->>'cardAccountId' AS acc \gset
SELECT jsonb_pretty(sandbox.wire_body('/cardAccount/create') - 'companyId') AS create_card_account;
SELECT * FROM sandbox.vs_docs(sandbox.wire_body('/cardAccount/create'),
    '{companyId,companyName,userId,planMasterId,email,mobile,accountTitle,accountType}');

-- Create Prepaid Card (api-13438387): email, mobile, firstName optional; gender "M".
SELECT enkash_create_prepaid_card(card_account_id => :'acc', last_name => 'Bose',
    gender => 'M', idempotency_key => 'WB-CARD-MIN')->>'enKashCardId' IS NOT NULL AS created_with_last_name_only;
SELECT jsonb_pretty(sandbox.wire_body('') - 'companyId' - 'cardAccountId') AS create_prepaid_card_minimal;
SELECT enkash_create_prepaid_card(card_account_id => :'acc', first_name => 'Kavya', last_name => 'Bose',
    email => 'kavya@wire.example', mobile => '9876500012', title => 'Ms', gender => 'F',
    address => '12 Park Street', address2 => 'Flat 3', city => 'Kolkata', state => 'West Bengal',
    country => 'India', pincode => '700016', primary_enkash_card => false, physical_card => true,
    load_amount => 10, remarks => 'wire', physical_delivery_address_flag => true,
    delivery_address => '12 Park Street', delivery_address2 => 'Flat 3', delivery_city => 'Kolkata',
    delivery_state => 'West Bengal', delivery_country => 'India', delivery_pincode => '700016',
    pan_number => 'ABCDE1234F', special_date => '2001-09-02',
    idempotency_key => 'WB-CARD')->>'enKashCardId' AS card \gset
SELECT jsonb_pretty(sandbox.wire_body('') - 'companyId' - 'cardAccountId') AS create_prepaid_card;
SELECT * FROM sandbox.vs_docs(sandbox.wire_body(''),
    '{userId,companyId,cardAccountId,email,mobile,title,firstName,lastName,gender,address,address2,city,state,country,pincode,primaryEnKashCard,physicalCard,loadAmount,remarks,physicalDeliveryAddressFlag,deliveryAddress,deliveryAddress2,deliveryCity,deliveryState,deliveryCountry,deliveryPincode,documents,specialDate}');

-- documents as a jsonb array, any document types; or pan_number, not both.
SELECT enkash_create_prepaid_card(card_account_id => :'acc', last_name => 'Das',
    documents => '[{"docType": "PAN", "docNo": "ABCDE1234F"}, {"docType": "PASSPORT", "docNo": "Z1234567"}]',
    idempotency_key => 'WB-CARD-DOCS') IS NOT NULL AS created_with_documents;
SELECT sandbox.wire_body('')->'documents' AS documents;
SELECT * FROM sandbox.try($$SELECT enkash_create_prepaid_card('CASANDBOX1', last_name => 'Das', pan_number => 'ABCDE1234F', documents => '[]', idempotency_key => 'WB-X')$$);
SELECT * FROM sandbox.try($$SELECT enkash_create_prepaid_card('CASANDBOX1', last_name => 'Das', documents => '{"docType": "PAN"}', idempotency_key => 'WB-X')$$);

-- Create Gift Card (api-13012983): as above, plus middleName; loadAmount required.
SELECT enkash_create_gift_card(card_account_id => 'CAGIFT1', first_name => 'Ira', middle_name => 'K',
    last_name => 'Sen', load_amount => 500, idempotency_key => 'WB-GIFT')->>'enKashCardId' IS NOT NULL AS gift_created;
SELECT jsonb_pretty(sandbox.wire_body('') - 'companyId') AS create_gift_card;
SELECT * FROM sandbox.try($$SELECT enkash_create_gift_card(card_account_id => 'CAGIFT1', last_name => 'Sen', idempotency_key => 'WB-GIFT-2')$$);

-- Set Card PIN (api-8990358): pinBlock is a string ("Pin to be set"), otpRequired.
SELECT enkash_set_card_pin('CASANDBOX1', 'EKCSANDBOX1', pin_block => '9078') AS set_card_pin;
SELECT * FROM sandbox.vs_docs(sandbox.wire_body('/setPin'),
    '{companyId,cardAccountId,enKashCardId,pinBlock,otpRequired}');
SELECT jsonb_typeof(b->'pinBlock') AS pin_block_type, jsonb_typeof(b->'otpRequired') AS otp_required_type
FROM sandbox.wire_body('/setPin') b;

-- Load Card Balance (api-13438388)
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'WB-LOAD-1', description => 'desc', remarks => 'wire') IS NOT NULL AS loaded;
SELECT jsonb_pretty(sandbox.wire_body('/balance') - 'companyId' - 'createdBy') AS load_balance;
SELECT * FROM sandbox.vs_docs(sandbox.wire_body('/balance'),
    '{companyId,cardAccountId,createdBy,amount,transactionType,description,type,transactionCode,uniqueReferenceNumber,remarks,enKashCardId}');

-- Get Card Account Details (api-8990349)
SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId' AS get_card_account;
SELECT * FROM sandbox.vs_docs(sandbox.wire_body('/cardAccount/get'), '{cardAccountId,companyId}');

-- Generate Card OTP (api-12877368; members as on api-26007577)
SELECT enkash_generate_card_otp('CASANDBOX1', 'EKCSANDBOX1') #>> '{}' AS otp_request \gset
SELECT jsonb_pretty(sandbox.wire_body('/otp')) AS generate_card_otp;

-- View Card Details: no page documents its body (basis inferred).
SELECT enkash_view_card_details('CASANDBOX1', 'EKCSANDBOX1', :'otp_request', sandbox.otp(:'otp_request')) ? 'cvv' AS viewed;
SELECT ARRAY(SELECT jsonb_object_keys(sandbox.wire_body('/view')) ORDER BY 1) AS view_card_details_members;

-- Card Usage Controls (api-13013003, api-8990361): the count limits are
-- *LimitCount, adminUser a boolean, a limit in clear_limits goes as null.
SELECT enkash_set_card_controls('CASANDBOX1', ARRAY['EKCSANDBOX1'],
    pos_allowed => true, online_allowed => true, atm_allowed => false, international_allowed => false,
    contactless_allowed => true, per_txn_limit => 5000, dtd => 20000, mtd => 100000, ytd => 500000,
    dtd_count => 10, mtd_count => 100, ytd_count => 1000,
    pos_daily_limit => 10000, pos_daily_limit_count => 5,
    ecom_daily_limit => 8000, ecom_daily_limit_count => 4,
    contact_less_daily_limit => 2000, contact_less_daily_limit_count => 3,
    admin_user => true) AS set_card_controls;
SELECT jsonb_pretty(sandbox.wire_body('/velocity/rule') - 'companyId') AS card_usage_controls;
SELECT * FROM sandbox.vs_docs(sandbox.wire_body('/velocity/rule'),
    '{companyId,cardAccountId,enKashCardIds,posAllowed,onlineAllowed,atmAllowed,internationalAllowed,contactlessAllowed,perTxnLimit,dtd,mtd,ytd,dtdCount,mtdCount,ytdCount,adminUser,posDailyLimit,posDailyLimitCount,ecomDailyLimit,ecomDailyLimitCount,contactLessDailyLimit,contactLessDailyLimitCount}');
-- The counts reached the card: EnKash's names, not names it drops.
SELECT c->'posDailyLimitCount' AS pos, c->'ecomDailyLimitCount' AS ecom,
       c->'contactLessDailyLimitCount' AS contactless
FROM enkash_get_card_controls('CASANDBOX1', 'EKCSANDBOX1') c;
-- null clears a limit; absent leaves it.
SELECT enkash_set_card_controls('CASANDBOX1', ARRAY['EKCSANDBOX1'], clear_limits => ARRAY['dtd', 'pos_daily_limit_count']) AS cleared;
SELECT sandbox.wire_body('/velocity/rule') - 'companyId' AS clear_body;
SELECT c->'dtd' AS dtd, c->'posDailyLimitCount' AS pos_count, c->'mtd' AS mtd_left
FROM enkash_get_card_controls('CASANDBOX1', 'EKCSANDBOX1') c;
SELECT * FROM sandbox.try($$SELECT enkash_set_card_controls('CASANDBOX1', ARRAY['EKCSANDBOX1'], dtd => 5, clear_limits => ARRAY['dtd'])$$);
SELECT * FROM sandbox.try($$SELECT enkash_set_card_controls('CASANDBOX1', ARRAY['EKCSANDBOX1'], clear_limits => ARRAY['pos_allowed'])$$);
-- Members the pages describe without naming (the auto-load settings) go in
-- extra_members, as given; a member with an argument of its own does not.
SELECT enkash_set_card_controls('CASANDBOX1', ARRAY['EKCSANDBOX1'], extra_members => '{"memberNamedByEnKash": true, "anAmount": 250.5}') AS extra;
SELECT sandbox.wire_body('/velocity/rule') - 'companyId' AS extra_body;
SELECT * FROM sandbox.try($$SELECT enkash_set_card_controls('CASANDBOX1', ARRAY['EKCSANDBOX1'], extra_members => '{"dtd": 5}')$$);
SELECT * FROM sandbox.try($$SELECT enkash_set_card_controls('CASANDBOX1', ARRAY['EKCSANDBOX1'], extra_members => '[1]')$$);
-- adminUser as a string is refused by EnKash with HTTP 400 (the sandbox too).
SELECT * FROM sandbox.try($$SELECT enkash_call('set_card_controls', '{"companyId":"CEKSANDBOX1","cardAccountId":"CASANDBOX1","enKashCardIds":["EKCSANDBOX1"],"adminUser":"postgres"}')$$);

-- Get Card Usage Limits (api-13013004)
SELECT * FROM sandbox.vs_docs(sandbox.wire_body('/velocity/rule/get'), '{companyId,cardAccountId,enKashCardId}');

-- Block Card (api-13438390): otpMedium is required, MOBILE by default.
SELECT enkash_block_card('CASANDBOX1', 'EKCSANDBOX2', 'L', reason => 'wire') AS block_card;
SELECT jsonb_pretty(sandbox.wire_body('/block') - 'companyId' - 'createdBy') AS block_card_body;
SELECT * FROM sandbox.vs_docs(sandbox.wire_body('/block'),
    '{companyId,cardAccountId,enKashCardId,blockCode,reason,otpMedium,otpRequestId,otp,createdBy,mfaCode,otpRequired}');
SELECT enkash_block_card('CASANDBOX1', 'EKCSANDBOX2', 'UL') AS unblocked;

-- Order Physical Card: no page documents its body (basis inferred).
SELECT enkash_order_physical_card('CASANDBOX1', 'EKCSANDBOX2', '5 MG Road', 'Bengaluru', 'Karnataka', '560001',
    idempotency_key => 'WB-PHYS') IS NOT NULL AS ordered;
SELECT jsonb_pretty(sandbox.wire_body('/physicalCard/order') - 'companyId') AS order_physical_card;

-- Request Card Replacement (api-13438389): otpMedium required; otpRequired is
-- not on this page, so it is not sent unless given.
SELECT enkash_request_card_replacement('EKCSANDBOX2', idempotency_key => 'WB-REPL') IS NOT NULL AS replaced;
SELECT jsonb_pretty(sandbox.wire_body('/replaceCard')) AS request_card_replacement;
SELECT * FROM sandbox.vs_docs(sandbox.wire_body('/replaceCard'),
    '{enKashCardId,otpRequestId,cardAccountId,otpMedium,otp,mfaCode}');

-- Get Card Details (api-24480521): without enKashCardId, every card of the
-- account as {recordsCount, data}; no clientReferenceId.
SELECT (c->>'recordsCount')::int = jsonb_array_length(c->'data') AS count_matches,
       (c->>'recordsCount')::int >= 3 AS all_cards
FROM enkash_get_card('CASANDBOX1') c;
SELECT sandbox.wire_body('/search') - 'companyId' AS get_card_all_body;
SELECT c->'recordsCount' AS records, c->'data'->0->>'enKashCardId' AS card
FROM enkash_get_card('CASANDBOX1', 'EKCSANDBOX1') c;
SELECT * FROM sandbox.vs_docs(sandbox.wire_body('/search'), '{cardAccountId,companyId,enKashCardId}');

-- Get Transaction Details (api-13551023)
SELECT enkash_get_transaction('CASANDBOX1', 'WB-LOAD-1', enkash_card_id => 'EKCSANDBOX1') IS NOT NULL AS found;
SELECT * FROM sandbox.vs_docs(sandbox.wire_body('/transaction/all'),
    '{companyId,cardAccountId,enKashCardId,pgReferenceNumber}');

-- Get All Transaction details (api-13551023): txnDateFrom/To in UTC with Z,
-- as the page's example 2025-01-24T08:47:01.505Z, whatever the session's zone.
SET TIME ZONE 'America/New_York';
SELECT count(*) > 0 AS listed FROM enkash_transactions('CASANDBOX1',
    txn_date_from => '2025-01-24 08:47:01.505+00', txn_date_to => '2099-01-01 00:00:00+05:30');
SELECT b->>'txnDateFrom' AS txn_date_from, b->>'txnDateTo' AS txn_date_to
FROM sandbox.wire_body('/transaction/all') b;

-- Times in answers are IST without an offset ("Jan 23, 2025 4:38:36 PM",
-- api-13013004): read as IST in any session time zone.
SELECT enkash.answer_time('Jan 23, 2025 4:38:36 PM') AT TIME ZONE 'UTC' AS ist_answer_in_utc;
SET TIME ZONE 'UTC';
SELECT enkash.answer_time('Jan 23, 2025 4:38:36 PM') AS same_in_utc_session,
       enkash.answer_time('Jan 23, 2025 12:05:00 AM') AS midnight_hour,
       enkash.answer_time('2025-01-24T08:47:01.505Z') AS iso_with_z;
-- The sandbox answers as EnKash does, and the typed rows read it as IST:
-- a load made now is listed within a minute of now.
SELECT t->>'txnDate' ~ '^[A-Z][a-z]{2} [0-9]{1,2}, [0-9]{4} [0-9]{1,2}:[0-9]{2}:[0-9]{2} [AP]M$' AS answer_format
FROM enkash_get_transaction('CASANDBOX1', 'WB-LOAD-1', enkash_card_id => 'EKCSANDBOX1') r,
     LATERAL (SELECT CASE WHEN r ? 'data' THEN r->'data'->0 ELSE r END) AS x(t);
SELECT abs(extract(epoch FROM txn_date - now())) < 60 AS listed_at_the_right_time
FROM enkash_transactions('CASANDBOX1', 'EKCSANDBOX1', pg_reference_numbers => ARRAY['WB-LOAD-1']);
RESET TIME ZONE;
