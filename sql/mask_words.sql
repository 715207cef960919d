--
-- What the audit log keeps of a request: members named after a secret are
-- removed however the name is spelt (camelCase, snake_case, capitals), card
-- numbers are kept as first 6 / last 4, and names that merely contain such a
-- word are kept as they are.
--
SELECT coalesce(max(id), 0) AS audit_before FROM enkash.audit_log \gset
SELECT enkash_call('get_card_account', '{
    "companyId": "CEKSANDBOX1", "cardAccountId": "CASANDBOX1",
    "cvc": "123", "CVV2": "456", "cardCvv": "789", "card_security_code": "321",
    "cardPin": "1234", "newPIN": "5678", "pin_block": "04A1B2C3D4E5F6A7", "PINBlock": "x",
    "otp": "111111", "otpCode": "222222", "mfaCode": "333333", "mfa_code": "444444",
    "apiPassword": "p", "client_secret": "s", "accessToken": "t", "cardExpiry": "12/30",
    "pan": "4111111111111111", "cardNumber": "4111 1111 1111 1111",
    "card_no": "5555555555554444", "CardNum": "not a number",
    "otpRequestId": "OTPREQ-1", "otpRequired": true, "pinSet": true,
    "pincode": "560001", "deliveryPincode": "560002", "spinner": "s",
    "company": "Acme", "panel": "p", "cardNumberLength": 16
}') IS NOT NULL AS answered;
SELECT key, value
FROM jsonb_each_text((sandbox.audit_after(:audit_before, 'get_card_account')).request)
WHERE key NOT IN ('companyId', 'cardAccountId')
ORDER BY key COLLATE "C";
