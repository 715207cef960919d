/*-------------------------------------------------------------------------
 *
 * pages.c
 *	  Endpoints that answer a page at a time: every page, as rows.
 *
 * The one list shape EnKash documents is {"recordsCount": n, "data": [...]};
 * {"content": [...], "totalPages": n} is read too [inferred].  Pages are
 * asked for by "page" (from 0) and "size" (enkash.page_size) [inferred; the
 * member names are enkash.paging_fields].
 * enkash_endpoint_pages asks for each page in turn and returns the items as
 * jsonb rows; the install script turns them into typed columns.
 * Each page's memory is freed before the next is asked for.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "endpoints.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

/* A listing longer than this many pages is surely a server bug. */
#define MAX_PAGES 100000

/*
 * The items of a listing answer and what it says of the whole: false if
 * the payload is neither {recordsCount, data} nor {content, totalPages}.
 */
bool
enkash_list_of(Jsonb *payload, EnkashList *list)
{
	static const char *const arrays[] = {"data", "content"};
	JsonbValue	v;

	list->items = NULL;
	list->total_records = -1;
	list->total_pages = -1;
	if (payload == NULL || !JB_ROOT_IS_OBJECT(payload))
		return false;
	for (int i = 0; i < lengthof(arrays) && list->items == NULL; i++)
		if (getKeyJsonValueFromContainer(&payload->root, arrays[i], strlen(arrays[i]), &v) &&
			v.type == jbvBinary && JsonContainerIsArray(v.val.binary.data))
			list->items = v.val.binary.data;
	if (list->items == NULL)
		return false;
	if (!enkash_json_int8(payload, "recordsCount", &list->total_records))
		enkash_json_int8(payload, "totalElements", &list->total_records);
	enkash_json_int8(payload, "totalPages", &list->total_pages);
	return true;
}

/* Stores the page's items; returns how many there were. */
static int
store_items(ReturnSetInfo *rsinfo, const EnkashList *list)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken token;
	int			n = 0;

	it = JsonbIteratorInit(list->items);
	while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		Datum		item;
		bool		isnull = false;

		if (token != WJB_ELEM)
			continue;
		item = JsonbPGetDatum(JsonbValueToJsonb(&v));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &item, &isnull);
		n++;
	}
	return n;
}

PG_FUNCTION_INFO_V1(enkash_endpoint_pages);

Datum
enkash_endpoint_pages(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const EnkashEndpoint *ep;
	StringInfoData base;
	StringInfoData body;
	MemoryContext page_cxt;
	MemoryContext old_cxt;
	int			size = enkash_page_size;
	int64		seen = 0;
	char	   *key;
	/* "page,size" (checked when set): the member names of the paging */
	const char *size_field = strchr(enkash_paging_fields, ',') + 1;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	initStringInfo(&base);
	enkash_build_body(fcinfo, &base, &ep, &key);
	base.data[--base.len] = '\0';	/* reopen the object for page and size */
	initStringInfo(&body);

	page_cxt = AllocSetContextCreate(CurrentMemoryContext, "enkash page",
									 ALLOCSET_DEFAULT_SIZES);
	for (int page = 0;; page++)
	{
		Jsonb	   *answer;
		EnkashList	list;
		int			items;

		if (page >= MAX_PAGES)
			ereport(ERROR,
					(errcode(ERRCODE_ENKASH_BAD_RESPONSE),
					 errmsg("EnKash's listing for %s goes on past %d pages", ep->label,
							MAX_PAGES)));
		CHECK_FOR_INTERRUPTS();

		resetStringInfo(&body);
		appendStringInfo(&body, "%s%s\"%.*s\":%d,\"%s\":%d}", base.data,
						 base.len > 1 ? "," : "",
						 (int) (size_field - enkash_paging_fields - 1), enkash_paging_fields,
						 page, size_field, size);

		old_cxt = MemoryContextSwitchTo(page_cxt);
		answer = enkash_send(ep, body.data, body.len, NULL);
		if (!enkash_list_of(answer, &list))
			ereport(ERROR,
					(errcode(ERRCODE_ENKASH_BAD_RESPONSE),
					 errmsg("EnKash's answer for %s has no list of items", ep->label),
					 errdetail("The payload has neither a \"data\" nor a \"content\" array.")));
		items = store_items(rsinfo, &list);
		seen += items;
		MemoryContextSwitchTo(old_cxt);
		MemoryContextReset(page_cxt);

		/* The last page: short, or all the pages or records EnKash says there are. */
		if (items < size ||
			(list.total_pages >= 0 && page + 1 >= list.total_pages) ||
			(list.total_records >= 0 && seen >= list.total_records))
			break;
	}
	MemoryContextDelete(page_cxt);
	return (Datum) 0;
}
