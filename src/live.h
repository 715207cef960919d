/* live.h: whether this server is the live one, the only one that sends. */
#ifndef ENKASH_LIVE_H
#define ENKASH_LIVE_H

#include "endpoints.h"

extern bool enkash_live_here(void);
extern void enkash_require_live(const EnkashEndpoint *ep);

#endif
