--
-- Card secrets: the card number (PAN) and CVV come back to the caller of
-- enkash_view_card_details and nowhere else; the PIN block and the OTP go to
-- EnKash and nowhere else.  Errors never quote them.  Here they are checked
-- without ever being printed or written in SQL text.
--
SELECT sandbox.reset();

-- The OTP flow: ask for an OTP, the card holder reads it out, view the card.
SELECT enkash_generate_card_otp('CASANDBOX1', 'EKCSANDBOX1') #>> '{}' AS otp_request \gset
SELECT d->>'cardNumber' ~ '^652150[0-9]{10}$' AS full_card_number,
       d->>'cvv' ~ '^[0-9]{3}$' AS cvv,
       d->>'expiry' ~ '^[0-9]{2}/[0-9]{2}$' AS expiry,
       d->>'cardHolderName' AS holder
FROM enkash_view_card_details('CASANDBOX1', 'EKCSANDBOX1', :'otp_request',
                              sandbox.otp(:'otp_request')) d;

-- An OTP works once.
SELECT * FROM sandbox.try(format($$SELECT enkash_view_card_details('CASANDBOX1', 'EKCSANDBOX1', %L, sandbox.otp(%L))$$,
                                 :'otp_request', :'otp_request'));

-- A wrong OTP is refused by EnKash; the message does not echo it.
SELECT enkash_generate_card_otp('CASANDBOX1', 'EKCSANDBOX1') #>> '{}' AS otp_request \gset
SELECT * FROM sandbox.try_detail(format($$SELECT enkash_view_card_details('CASANDBOX1', 'EKCSANDBOX1', %L, '000000')$$,
                                        :'otp_request'));

-- Setting a PIN from a PIN block.
SELECT enkash_set_card_pin('CASANDBOX1', 'EKCSANDBOX1', pin_block => '04A1B2C3D4E5F6A7');
SELECT (enkash_get_card('CASANDBOX1', 'EKCSANDBOX1'))->'data'->0->>'pinSet' AS pin_set;

-- The search finds what is there: a planted value in a table and in the log.
CREATE TABLE sandbox.canary (note text);
INSERT INTO sandbox.canary VALUES ('canary-4111-1111');
DO $$ BEGIN RAISE WARNING 'canary-5555-2222'; END $$;
SELECT sandbox.places_holding('canary-4111-1111') AS planted_in_table;
SELECT sandbox.places_holding('canary-5555-2222') AS planted_in_log;
DROP TABLE sandbox.canary;

-- What the audit log keeps of the view: the card number masked, CVV and
-- expiry removed.
SELECT response->'payload'->>'cardNumber' ~ '^652150X{6}[0-9]{4}$' AS card_number_masked,
       response->'payload'->>'cvv' AS cvv, response->'payload'->>'expiry' AS expiry,
       request->>'otp' AS otp
FROM enkash.audit_log WHERE endpoint = 'view_card_details' AND outcome = 'ok'
ORDER BY id DESC LIMIT 1;


-- A card number typed into free text is masked in what is stored, too.
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'SECRET-TEXT-1',
                           description => 'refund to card 4111 1111 1111 1111');
SELECT request->>'description' AS stored_description
FROM enkash.audit_log WHERE idempotency_key = 'SECRET-TEXT-1' AND outcome = 'sent';
SELECT request->>'description' AS stored_description
FROM enkash.idempotency_keys WHERE key = 'SECRET-TEXT-1';

-- A look-up's answer is masked by the enkash worker, not the caller, before
-- it is stored: the caller gets the card token, the audit row does not.
SELECT coalesce(max(id), 0) AS audit_before FROM enkash.audit_log \gset
SELECT enkash_get_card_account('CASANDBOX1') #>> '{primaryEnKashCard,token}' <> '[removed]' AS caller_gets_the_token;
SELECT a #>> '{payload,primaryEnKashCard,token}' AS stored_token,
       a #>> '{payload,primaryEnKashCard,maskedNumber}' AS stored_masked_number
FROM sandbox.audit_after(:audit_before, 'get_card_account') AS t(request, a);
