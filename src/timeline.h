/* timeline.h: a new load is looked up first while the server's timeline is new. */
#ifndef ENKASH_TIMELINE_H
#define ENKASH_TIMELINE_H

#include "endpoints.h"

extern bool enkash_timeline_is_new(void);
extern bool enkash_look_up_first(const EnkashEndpoint *ep);

#endif
