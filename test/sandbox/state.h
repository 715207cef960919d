/*-------------------------------------------------------------------------
 *
 * state.h
 *	  The sandbox's in-memory model of EnKash: card accounts, cards,
 *	  transactions, the load ledger and issued OTPs.  Shared by state.c,
 *	  endpoints.c and control.c; always accessed under sandbox_lock.
 *
 * Records refer to each other by array index, since the arrays move when
 * they grow.  Money is int64 paise throughout.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SANDBOX_STATE_H
#define SANDBOX_STATE_H

#include "sandbox.h"

typedef enum CardStatus
{
	CARD_ACTIVE,
	CARD_LOCKED,
	CARD_BLOCKED,
	CARD_ACTIVATION_IN_PROGRESS,
	CARD_REPLACED
} CardStatus;

typedef struct Account
{
	char	   *id;
	char	   *company_id;
	char	   *company_name;
	char	   *plan_master_id;
	char	   *email;
	char	   *mobile;
	char	   *title;
	char	   *type;
	int64_t		available;		/* parent account funds, paise */
	int64_t		credit_limit;
	int			primary_card;	/* index into cards, -1 if none */
} Account;

typedef struct Card
{
	char	   *id;
	char	   *user_id;
	char	   *holder;			/* "First Last" */
	char	   *email;
	char	   *mobile;
	int			account;
	char		pan[17];
	char		expiry[6];
	char		cvv[4];
	char		masked[17];
	char		token[40];
	CardStatus	status;
	bool		gift;
	bool		pin_set;
	bool		physical;
	int64_t		balance;
	json_t	   *velocity;		/* rule fields; NULL = defaults */
} Card;

typedef struct Txn
{
	char	   *id;
	int			card;
	bool		credit;
	int64_t		amount;
	int64_t		balance_after;
	char	   *reference;		/* pgReferenceNumber */
	char	   *description;
	char	   *type;
	char	   *merchant;
	char	   *mcc;
	char	   *channel;
	char		rrn[13];
	int64_t		when_ms;
} Txn;

typedef struct LedgerEntry
{
	char	   *reference;
	int64_t		count;
	int64_t		amount;
} LedgerEntry;

typedef struct Otp
{
	char	   *id;
	char		otp[7];
	int			card;
	bool		used;
} Otp;

typedef struct State
{
	Account    *accounts;
	int			naccounts;
	int			accounts_cap;
	Card	   *cards;
	int			ncards;
	int			cards_cap;
	Txn		   *txns;
	int			ntxns;
	int			txns_cap;
	LedgerEntry *ledger;
	int			nledger;
	int			ledger_cap;
	int		   *ledger_slots;	/* hash of reference -> ledger index + 1; 0 = empty */
	int			nslots;			/* a power of two, at least twice nledger */
	Otp		   *otps;
	int			notps;
	int			otps_cap;
} State;

extern State st;

/* parent account funds every new account starts with: 10,00,000.00 */
#define NEW_ACCOUNT_FUNDS ((int64_t) 100000000)

extern void new_id(const char *prefix, char *buf, size_t len);
extern int	find_account(const char *id);
extern int	find_card(const char *id);
extern int	add_account(const char *id, const char *company_id,
						const char *company_name, const char *plan_master_id,
						const char *email, const char *mobile,
						const char *title, const char *type);
extern int	add_card(const char *id, int account, const char *user_id,
					 const char *first, const char *last, const char *email,
					 const char *mobile, bool gift);
extern int	add_txn(int card, bool credit, int64_t amount, const char *reference,
					const char *description, const char *type,
					const char *merchant, const char *mcc, const char *channel);
extern void ledger_credit(const char *reference, int64_t amount);
extern const char *card_status_label(CardStatus s);
extern json_t *card_brief_json(int card);
extern json_t *card_json(int card);
extern json_t *txn_json(int txn);
extern const char *otp_issue(int card);
extern bool otp_consume(const char *id, const char *otp, int card);

#endif							/* SANDBOX_STATE_H */
