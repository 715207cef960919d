/*-------------------------------------------------------------------------
 *
 * partner.h
 *	  The sandbox's test partner: the credentials enkash-sandbox accepts by
 *	  default, and the benchmark's clients (test/bench/wire.c) present.
 *	  test/lib.sh's write_credentials writes the same for the extension.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SANDBOX_PARTNER_H
#define SANDBOX_PARTNER_H

#define SANDBOX_CLIENT_ID "sandbox-client"
#define SANDBOX_CLIENT_SECRET "sandbox-secret-1"
#define SANDBOX_USERNAME "9999999999"
#define SANDBOX_PASSWORD "sandbox-password"
#define SANDBOX_COMPANY_ID "CEKSANDBOX1"
#define SANDBOX_PARTNER_ID "CRSANDBOX1"

/* The six fields above, as designated initializers of a struct naming them alike. */
#define SANDBOX_PARTNER_FIELDS \
	.client_id = SANDBOX_CLIENT_ID, \
	.client_secret = SANDBOX_CLIENT_SECRET, \
	.username = SANDBOX_USERNAME, \
	.password = SANDBOX_PASSWORD, \
	.company_id = SANDBOX_COMPANY_ID, \
	.partner_id = SANDBOX_PARTNER_ID

#endif							/* SANDBOX_PARTNER_H */
