/*-------------------------------------------------------------------------
 *
 * sessionize.c
 *	  clickstream.sessionize(query, ...): every row of a query's result,
 *	  assigned to a session of its user.
 *
 * The SQL way to sessionize sorts all events by user and time, then runs
 * lag() and a running sum over the sorted whole.  This function never sorts
 * globally.  It runs the query, groups its rows by user in a hash table,
 * then sorts each user's run (small, usually) and walks it once.
 *
 * Memory follows work_mem the way a hash join does.  When the users held
 * exceed it, the number of batches doubles and the users of the other
 * batches go to temporary files (tuplestores), to be read back and processed
 * one batch after another.  The events of one user are never split, so a
 * user with more events than work_mem holds is processed in memory anyway:
 * memory is then about twice that user's events.
 *
 * Rules, per user, events in (ts, event_id) order: a new session starts when
 * the gap to the previous event exceeds the timeout, when the event is more
 * than max_duration after the session's first event, at midnight in
 * clickstream.timezone (option), or when the event carries a campaign
 * (utm_source, utm_campaign) other than the one of the session's first event
 * (option).  The README ("Sessions") is the reference.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(clickstream_sessionize);
PG_FUNCTION_INFO_V1(clickstream_sessions_of);

/* Bytes of one arena block. */
#define SESS_ARENA_BLOCK (64 * 1024)
/* Most batches (temporary files) a call splits its input into. */
#define SESS_MAX_BATCHES 1024
/* In-memory size of a batch's tuplestore before it goes to its file. */
#define SESS_SPILL_KB 64
/* Events ahead whose records are fetched into the cache while emitting. */
#define SESS_PREFETCH_AHEAD 8
/* Users ahead whose records are fetched while a batch is emitted. */
#define SESS_PREFETCH_USERS 4

#if defined(__GNUC__) || defined(__clang__)
#define SessPrefetch(p) __builtin_prefetch(p)
#else
#define SessPrefetch(p) ((void) (p))
#endif

/* Input columns, found by name in the query's result. */
enum
{
	IN_USER, IN_TS, IN_EVENT_ID, IN_UTM_SOURCE, IN_UTM_CAMPAIGN, IN_NCOLS
};
static const char *const SessInputNames[IN_NCOLS] = {
	"user_id", "ts", "event_id", "utm_source", "utm_campaign"
};

/* Output columns of sessionize() (one row per event), as declared in SQL. */
enum
{
	OUT_USER, OUT_EVENT_ID, OUT_TS, OUT_SESSION_ID, OUT_SESSION_INDEX,
	OUT_SESSION_START, OUT_SESSION_END, OUT_EVENT_INDEX, OUT_SESSION_EVENTS,
	OUT_NCOLS
};

/* Output columns of sessions_of() (one row per session), as declared. */
enum
{
	SOUT_USER, SOUT_SESSION_ID, SOUT_SESSION_INDEX, SOUT_SESSION_START,
	SOUT_SESSION_END, SOUT_EVENTS, SOUT_FIRST_EVENT_ID, SOUT_LAST_EVENT_ID,
	SOUT_NCOLS
};

/*
 * One event held in memory, in the arena in arrival order.  With
 * split_on_campaign its utm_source and utm_campaign (text pointers, NULL when
 * NULL) follow, then its event_id (a text varlena) when it has one: see
 * SessEventId() and SessEventCampaign().
 */
typedef struct SessEvent
{
	uint32		user;			/* index into SessState.userv */
	bool		has_id;			/* an event_id follows (else it is NULL) */
} SessEvent;

/* An event as grouped and sorted: its time and its record. */
typedef struct SessSlot
{
	TimestampTz ts;
	SessEvent  *ev;
} SessSlot;

/* A user of the batch in memory. */
typedef struct SessUserInfo
{
	text	   *user;			/* in the arena */
	uint32		hash;
} SessUserInfo;

/*
 * A user as the hash table keys it: the text, and its first bytes inline, so
 * that comparing a short id (most are) touches only the table's own line.
 */
#define SESS_INLINE_KEY 36

typedef struct SessKey
{
	const text *user;
	uint32		len;
	char		inl[SESS_INLINE_KEY];
} SessKey;

/*
 * An entry of the users' hash table: user to index into userv, and the
 * user's number of events (counted here: the line a lookup reads anyway).
 */
typedef struct SessUser
{
	SessKey		key;
	uint32		hash;
	uint32		index;
	int64		nevents;
	char		status;
} SessUser;

/* Equality of two keys. */
static inline bool
SessKeyEqual(const SessKey *a, const SessKey *b)
{
	if (a->len != b->len)
		return false;
	if (a->len <= SESS_INLINE_KEY)
		return memcmp(a->inl, b->inl, a->len) == 0;
	return memcmp(VARDATA_ANY(a->user), VARDATA_ANY(b->user), a->len) == 0;
}

#define SH_PREFIX sessusers
#define SH_ELEMENT_TYPE SessUser
#define SH_KEY_TYPE SessKey
#define SH_KEY key
#define SH_HASH_KEY(tb, k) hash_bytes((const unsigned char *) VARDATA_ANY((k).user), (k).len)
#define SH_EQUAL(tb, a, b) SessKeyEqual(&(a), &(b))
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a) a->hash
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* The rules of one call. */
typedef struct SessRules
{
	int64		timeout;		/* microseconds, > 0 */
	int64		max_duration;	/* microseconds, > 0 */
	bool		split_at_midnight;
	bool		split_on_campaign;
	pg_tz	   *tz;				/* clickstream.timezone, for midnight */
} SessRules;

/* Everything one call holds. */
typedef struct SessState
{
	SessRules	rules;

	/* input: attribute numbers (0-based, -1 when absent) and converters */
	int			att[IN_NCOLS];
	int			natts;			/* columns to deform: 1 + the last used */
	Size		id_offset;		/* of the event_id in an event record */
	bool		as_text[IN_NCOLS];	/* binary-compatible with text */
	FmgrInfo	out[IN_NCOLS];	/* output functions of the others */
	MemoryContext rowcxt;		/* reset after every row */

	/* the batch in memory */
	MemoryContext batchcxt;		/* everything below */
	sessusers_hash *users;		/* user -> index into userv */
	SessUserInfo *userv;
	uint32		nusers;
	uint32		maxusers;
	SessSlot   *slots;			/* events in arrival order */
	SessSlot   *grouped_end;	/* end of the events grouped by user */
	int64		nslots;
	int64		maxslots;
	char	   *arena;			/* free part of the current block */
	Size		arena_left;
	char	   *keys;			/* same, for user ids: kept apart, dense */
	Size		keys_left;
	text	   *last_user;		/* user of the previous event, if in memory */
	uint32		last_index;		/* and its index into userv */
	SessUser   *last_entry;		/* and its entry (no insert since) */
	Size		used;			/* bytes of the batch in memory */
	Size		limit;			/* grow (split) beyond this */
	bool		growing;		/* SessGrow is copying events over */

	/* batches */
	int			nbatch;			/* a power of 2 */
	int			curbatch;
	Tuplestorestate **spill;	/* [SESS_MAX_BATCHES], NULL until used */
	TupleDesc	spilldesc;
	TupleTableSlot *spillslot;

	/* output */
	bool		per_session;	/* sessions_of(): a row per session */
	Tuplestorestate *out_store;
	TupleDesc	out_desc;
	StringInfoData idbuf;		/* session id input */
	uint64		rows_in;
	uint64		loose;			/* rows with a NULL user or ts */
} SessState;

/* The event_id of an event record, NULL when NULL. */
static inline text *
SessEventId(const SessState *st, const SessEvent *e)
{
	return e->has_id ? (text *) ((char *) e + st->id_offset) : NULL;
}

/* The utm_source and utm_campaign of an event record (split_on_campaign). */
static inline text **
SessEventCampaign(const SessEvent *e)
{
	return (text **) ((char *) e + MAXALIGN(sizeof(SessEvent)));
}

/* The DestReceiver the query's rows arrive at. */
typedef struct SessReceiver
{
	DestReceiver pub;
	SessState  *state;
} SessReceiver;

static void SessAdd(SessState *st, text *user, TimestampTz ts, text *event_id,
					text *utm_source, text *utm_campaign);

/* Equality of two text values, byte for byte. */
static inline bool
SessTextEqual(const text *a, const text *b)
{
	Size		la = VARSIZE_ANY_EXHDR(a);

	return la == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), la) == 0;
}

/* Equality of two nullable text values, NULL equal to NULL. */
static inline bool
SessTextEqualNull(const text *a, const text *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return SessTextEqual(a, b);
}

/* Byte order of two nullable text values, NULL last (the C collation). */
static inline int
SessTextCompare(const text *a, const text *b)
{
	Size		la,
				lb;
	int			c;

	if (a == NULL || b == NULL)
		return (a == NULL) - (b == NULL);
	la = VARSIZE_ANY_EXHDR(a);
	lb = VARSIZE_ANY_EXHDR(b);
	c = memcmp(VARDATA_ANY(a), VARDATA_ANY(b), Min(la, lb));
	if (c != 0)
		return c;
	return (la > lb) - (la < lb);
}

/* The documented event order: ts, then event_id (byte order, NULL last). */
static inline int
SessSlotCompare(const SessSlot *a, const SessSlot *b, SessState *st)
{
	if (a->ts != b->ts)
		return a->ts < b->ts ? -1 : 1;
	return SessTextCompare(SessEventId(st, a->ev), SessEventId(st, b->ev));
}

#define ST_SORT SessSortSlots
#define ST_ELEMENT_TYPE SessSlot
#define ST_COMPARE_ARG_TYPE SessState
#define ST_COMPARE(a, b, arg) SessSlotCompare(a, b, arg)
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

/* An interval as microseconds; errors for NULL, months or a value <= 0. */
static int64
SessIntervalArg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	Interval   *iv;
	int64		usec;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name)));
	iv = PG_GETARG_INTERVAL_P(argno);
	if (iv->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not contain months or years", name),
				 errhint("Months have no fixed length; write days or hours, e.g. '30 days'.")));
	if (pg_mul_s64_overflow((int64) iv->day, USECS_PER_DAY, &usec) ||
		pg_add_s64_overflow(usec, iv->time, &usec))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("%s is out of range", name)));
	if (usec <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be positive", name)));
	return usec;
}

/* A boolean argument; errors for NULL. */
static bool
SessBoolArg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name)));
	return PG_GETARG_BOOL(argno);
}

/*
 * Memory for the batch in memory from one of its arenas (*arena, *left):
 * blocks of the batch's context, never freed alone.
 */
static void *
SessArenaAlloc(SessState *st, char **arena, Size *left, Size size)
{
	void	   *p;

	size = MAXALIGN(size);
	if (size > *left)
	{
		Size		block = Max(size, SESS_ARENA_BLOCK);

		*arena = MemoryContextAllocHuge(st->batchcxt, block);
		*left = block;
		st->used += block;
	}
	p = *arena;
	*arena += size;
	*left -= size;
	return p;
}

/* A copy of a (nullable) text value in an arena, with a 4-byte header. */
static text *
SessArenaText(SessState *st, char **arena, Size *left, const text *t)
{
	Size		len;
	text	   *copy;

	if (t == NULL)
		return NULL;
	len = VARSIZE_ANY_EXHDR(t);
	copy = SessArenaAlloc(st, arena, left, VARHDRSZ + len);
	SET_VARSIZE(copy, VARHDRSZ + len);
	memcpy(VARDATA(copy), VARDATA_ANY(t), len);
	return copy;
}

/* Start an empty batch in memory: a new arena, users and events. */
static void
SessBatchStart(SessState *st, MemoryContext parent)
{
	st->batchcxt = AllocSetContextCreate(parent, "sessionize batch",
										 ALLOCSET_DEFAULT_SIZES);
	st->users = sessusers_create(st->batchcxt, 1024, NULL);
	st->maxusers = 1024;
	st->nusers = 0;
	st->userv = MemoryContextAlloc(st->batchcxt, sizeof(SessUserInfo) * st->maxusers);
	st->maxslots = 16384;
	st->nslots = 0;
	st->slots = MemoryContextAlloc(st->batchcxt, sizeof(SessSlot) * st->maxslots);
	st->arena = NULL;
	st->arena_left = 0;
	st->keys = NULL;
	st->keys_left = 0;
	st->last_user = NULL;
	st->used = st->users->size * sizeof(SessUser) +
		st->maxusers * sizeof(SessUserInfo) + st->maxslots * sizeof(SessSlot);
}

/* The batch a user's hash belongs to (bits apart from the table's). */
static inline int
SessBatchOf(SessState *st, uint32 hash)
{
	return (int) (murmurhash32(hash) & (uint32) (st->nbatch - 1));
}

/* Write one event to the temporary file of its batch. */
static void
SessSpill(SessState *st, int batch, text *user, TimestampTz ts, text *event_id,
		  text *utm_source, text *utm_campaign)
{
	Datum		values[5];
	bool		nulls[5];

	if (st->spill[batch] == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(st->spill));

		st->spill[batch] = tuplestore_begin_heap(false, false, SESS_SPILL_KB);
		MemoryContextSwitchTo(old);
	}
	values[0] = PointerGetDatum(user);
	nulls[0] = false;
	values[1] = TimestampTzGetDatum(ts);
	nulls[1] = false;
	values[2] = PointerGetDatum(event_id);
	nulls[2] = event_id == NULL;
	values[3] = PointerGetDatum(utm_source);
	nulls[3] = utm_source == NULL;
	values[4] = PointerGetDatum(utm_campaign);
	nulls[4] = utm_campaign == NULL;
	tuplestore_putvalues(st->spill[batch], st->spilldesc, values, nulls);
}

/*
 * Double the number of batches: the events of users of the other half go to
 * their files, the rest is copied to a fresh batch.  When that frees little
 * (one user or a few hold most of the memory), the limit rises instead of
 * splitting on.
 */
static void
SessGrow(SessState *st)
{
	MemoryContext oldcxt = st->batchcxt;
	MemoryContext parent = MemoryContextGetParent(oldcxt);
	SessSlot   *slots = st->slots;
	int64		nslots = st->nslots;
	SessUserInfo *userv = st->userv;
	int64		i;

	if (st->nbatch >= SESS_MAX_BATCHES)
	{
		st->limit = st->used * 2;
		return;
	}
	st->nbatch *= 2;
	SessBatchStart(st, parent);
	st->growing = true;
	for (i = 0; i < nslots; i++)
	{
		SessEvent  *e = slots[i].ev;
		SessUserInfo *u = &userv[e->user];
		int			batch = SessBatchOf(st, u->hash);

		text	   *utm_source = NULL;
		text	   *utm_campaign = NULL;

		if (st->rules.split_on_campaign)
		{
			utm_source = SessEventCampaign(e)[0];
			utm_campaign = SessEventCampaign(e)[1];
		}
		if (batch != st->curbatch)
			SessSpill(st, batch, u->user, slots[i].ts, SessEventId(st, e),
					  utm_source, utm_campaign);
		else
			SessAdd(st, u->user, slots[i].ts, SessEventId(st, e),
					utm_source, utm_campaign);
		if ((i & 0xFFFF) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	MemoryContextDelete(oldcxt);
	st->growing = false;

	if (st->used > st->limit / 2)
		st->limit = st->used * 2;
}

/* Take one event: into memory if its user's batch is the current one. */
static void
SessAdd(SessState *st, text *user, TimestampTz ts, text *event_id,
		text *utm_source, text *utm_campaign)
{
	uint32		hash;
	int			batch;
	SessUser   *u;
	SessKey		key;
	SessEvent  *e;
	bool		found;
	uint32		size_before;
	Size		idlen;

	/*
	 * Input grouped by user (silver is written sorted by user, day by day)
	 * comes as runs of one user: those need no hashing at all.
	 */
	if (st->last_user == NULL || !SessTextEqual(user, st->last_user))
	{
		hash = hash_bytes((const unsigned char *) VARDATA_ANY(user),
						  VARSIZE_ANY_EXHDR(user));
		batch = SessBatchOf(st, hash);
		if (batch != st->curbatch)
		{
			st->last_user = NULL;
			SessSpill(st, batch, user, ts, event_id, utm_source, utm_campaign);
			return;
		}

		key.user = user;
		key.len = VARSIZE_ANY_EXHDR(user);
		memcpy(key.inl, VARDATA_ANY(user), Min(key.len, SESS_INLINE_KEY));
		size_before = st->users->size;
		u = sessusers_insert_hash(st->users, key, hash, &found);
		if (!found)
		{
			if (st->nusers == st->maxusers)
			{
				st->used += st->maxusers * sizeof(SessUserInfo);
				st->maxusers *= 2;
				st->userv = repalloc_huge(st->userv, sizeof(SessUserInfo) * st->maxusers);
			}
			u->key.user = SessArenaText(st, &st->keys, &st->keys_left, user);
			u->index = st->nusers++;
			st->userv[u->index].user = (text *) u->key.user;
			st->userv[u->index].hash = hash;
			u->nevents = 0;
			if (st->users->size != size_before)
				st->used += (st->users->size - size_before) * sizeof(SessUser);
		}
		st->last_user = (text *) u->key.user;
		st->last_entry = u;
		st->last_index = u->index;
	}
	st->last_entry->nevents++;

	idlen = event_id ? VARSIZE_ANY_EXHDR(event_id) : 0;
	e = SessArenaAlloc(st, &st->arena, &st->arena_left,
					   st->id_offset + (event_id ? VARHDRSZ + idlen : 0));
	e->user = st->last_index;
	e->has_id = event_id != NULL;
	if (event_id)
	{
		text	   *id = SessEventId(st, e);

		SET_VARSIZE(id, VARHDRSZ + idlen);
		memcpy(VARDATA(id), VARDATA_ANY(event_id), idlen);
	}
	if (st->rules.split_on_campaign)
	{
		SessEventCampaign(e)[0] = SessArenaText(st, &st->arena, &st->arena_left, utm_source);
		SessEventCampaign(e)[1] = SessArenaText(st, &st->arena, &st->arena_left, utm_campaign);
	}

	if (st->nslots == st->maxslots)
	{
		st->used += st->maxslots * sizeof(SessSlot);
		st->maxslots *= 2;
		st->slots = repalloc_huge(st->slots, sizeof(SessSlot) * st->maxslots);
	}
	st->slots[st->nslots].ts = ts;
	st->slots[st->nslots].ev = e;
	st->nslots++;

	if (st->used > st->limit && !st->growing)
		SessGrow(st);
}

/* Day number of ts in clickstream.timezone (infinities far apart). */
static int64
SessLocalDay(const SessRules *rules, TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tz;

	if (TIMESTAMP_NOT_FINITE(ts) ||
		timestamp2tm(ts, &tz, &tm, &fsec, NULL, rules->tz) != 0)
		return ts < 0 ? PG_INT64_MIN : PG_INT64_MAX;
	return date2j(tm.tm_year, tm.tm_mon, tm.tm_mday);
}

/* Whether b - a > limit, for any two timestamps (overflow counts as more). */
static inline bool
SessFurtherThan(TimestampTz a, TimestampTz b, int64 limit)
{
	int64		d;

	if (pg_sub_s64_overflow(b, a, &d))
		return true;
	return d > limit;
}

/*
 * The deterministic id of a session, from the key
 *	  octet_length(user_id) ':' user_id ':' session_start ':' first event_id
 * (session_start in microseconds since 2000-01-01, in decimal; the event id
 * empty when NULL): PostgreSQL's 64-bit hash of the key with seed 0, then
 * with seed 1, as a UUID of version 8 (so, in SQL, from hashtextextended()).
 */
static void
SessSessionId(SessState *st, const text *user, const SessSlot *first, pg_uuid_t *id)
{
	text	   *event_id = SessEventId(st, first->ev);
	char		num[MAXINT8LEN + 1];
	uint64		h[2];
	int			i;

	resetStringInfo(&st->idbuf);
	pg_ltoa((int32) VARSIZE_ANY_EXHDR(user), num);
	appendStringInfoString(&st->idbuf, num);
	appendStringInfoChar(&st->idbuf, ':');
	appendBinaryStringInfo(&st->idbuf, VARDATA_ANY(user), VARSIZE_ANY_EXHDR(user));
	appendStringInfoChar(&st->idbuf, ':');
	pg_lltoa(first->ts, num);
	appendStringInfoString(&st->idbuf, num);
	appendStringInfoChar(&st->idbuf, ':');
	if (event_id)
		appendBinaryStringInfo(&st->idbuf, VARDATA_ANY(event_id),
							   VARSIZE_ANY_EXHDR(event_id));
	for (i = 0; i < 2; i++)
		h[i] = pg_hton64(hash_bytes_extended((const unsigned char *) st->idbuf.data,
											 st->idbuf.len, i));
	memcpy(id->data, h, UUID_LEN);
	id->data[6] = (id->data[6] & 0x0f) | 0x80;
	id->data[8] = (id->data[8] & 0x3f) | 0x80;
}

/* Emit the rows of one session: events ev[0..n) of user. */
static void
SessEmitSession(SessState *st, text *user, SessSlot *ev, int64 n,
				int32 session_index)
{
	Datum		values[OUT_NCOLS];
	bool		nulls[OUT_NCOLS];
	pg_uuid_t	id;
	int64		i;

	SessSessionId(st, user, &ev[0], &id);
	memset(nulls, 0, sizeof(nulls));
	if (st->per_session)
	{
		text	   *first = SessEventId(st, ev[0].ev);
		text	   *last = SessEventId(st, ev[n - 1].ev);

		values[SOUT_USER] = PointerGetDatum(user);
		values[SOUT_SESSION_ID] = UUIDPGetDatum(&id);
		values[SOUT_SESSION_INDEX] = Int32GetDatum(session_index);
		values[SOUT_SESSION_START] = TimestampTzGetDatum(ev[0].ts);
		values[SOUT_SESSION_END] = TimestampTzGetDatum(ev[n - 1].ts);
		values[SOUT_EVENTS] = Int64GetDatum(n);
		values[SOUT_FIRST_EVENT_ID] = PointerGetDatum(first);
		nulls[SOUT_FIRST_EVENT_ID] = first == NULL;
		values[SOUT_LAST_EVENT_ID] = PointerGetDatum(last);
		nulls[SOUT_LAST_EVENT_ID] = last == NULL;
		tuplestore_putvalues(st->out_store, st->out_desc, values, nulls);
		return;
	}
	values[OUT_USER] = PointerGetDatum(user);
	values[OUT_SESSION_ID] = UUIDPGetDatum(&id);
	values[OUT_SESSION_INDEX] = Int32GetDatum(session_index);
	values[OUT_SESSION_START] = TimestampTzGetDatum(ev[0].ts);
	values[OUT_SESSION_END] = TimestampTzGetDatum(ev[n - 1].ts);
	values[OUT_SESSION_EVENTS] = Int64GetDatum(n);
	for (i = 0; i < n; i++)
	{
		text	   *event_id;

		if (ev + i + SESS_PREFETCH_AHEAD < st->grouped_end)
			SessPrefetch(ev[i + SESS_PREFETCH_AHEAD].ev);
		event_id = SessEventId(st, ev[i].ev);

		values[OUT_EVENT_ID] = PointerGetDatum(event_id);
		nulls[OUT_EVENT_ID] = event_id == NULL;
		values[OUT_TS] = TimestampTzGetDatum(ev[i].ts);
		values[OUT_EVENT_INDEX] = Int64GetDatum(i + 1);
		tuplestore_putvalues(st->out_store, st->out_desc, values, nulls);
	}
}

/* Walk one user's sorted events and emit them session by session. */
static void
SessEmitUser(SessState *st, text *user, SessSlot *ev, int64 n)
{
	const SessRules *r = &st->rules;
	int64		i;
	int64		first = 0;
	int32		session_index = 0;
	int64		day_prev = 0;

	if (r->split_at_midnight)
		day_prev = SessLocalDay(r, ev[0].ts);
	for (i = 1; i <= n; i++)
	{
		bool		split = i == n;

		if (!split)
		{

			split = SessFurtherThan(ev[i - 1].ts, ev[i].ts, r->timeout) ||
				SessFurtherThan(ev[first].ts, ev[i].ts, r->max_duration);
			if (r->split_at_midnight)
			{
				int64		day = SessLocalDay(r, ev[i].ts);

				split = split || day != day_prev;
				day_prev = day;
			}
			if (!split && r->split_on_campaign)
			{
				text	  **cur = SessEventCampaign(ev[i].ev);
				text	  **start = SessEventCampaign(ev[first].ev);

				if (cur[0] != NULL || cur[1] != NULL)
					split = !SessTextEqualNull(cur[0], start[0]) ||
						!SessTextEqualNull(cur[1], start[1]);
			}
		}
		if (split)
		{
			if (session_index == PG_INT32_MAX)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("a user has more than %d sessions", PG_INT32_MAX)));
			SessEmitSession(st, user, ev + first, i - first, ++session_index);
			first = i;
		}
		if ((i & 0xFFFF) == 0)
			CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Emit every user of the batch in memory, then empty it.  The events are
 * grouped by user with a counting sort (sequential passes, no comparison),
 * then each user's run is sorted on its own.
 */
static void
SessEmitBatch(SessState *st)
{
	MemoryContext parent = MemoryContextGetParent(st->batchcxt);
	int64	   *next;
	SessSlot   *grouped;
	int64		i;
	int64		pos = 0;
	uint32		u;
	sessusers_iterator it;
	SessUser   *entry;

	/* next[u]: where user u's events go, from the counts in the table */
	next = MemoryContextAllocHuge(st->batchcxt, sizeof(int64) * (st->nusers + 1));
	sessusers_start_iterate(st->users, &it);
	while ((entry = sessusers_iterate(st->users, &it)) != NULL)
		next[entry->index] = entry->nevents;
	for (u = 0; u < st->nusers; u++)
	{
		int64		n = next[u];

		next[u] = pos;
		pos += n;
	}
	grouped = MemoryContextAllocHuge(st->batchcxt,
									 sizeof(SessSlot) * Max(st->nslots, 1));
	for (i = 0; i < st->nslots; i++)
		grouped[next[st->slots[i].ev->user]++] = st->slots[i];
	st->grouped_end = grouped + st->nslots;

	/*
	 * Walk the users in order.  Their event records lie anywhere in the
	 * arena: fetch those of a user a few places ahead into the cache while
	 * this one is sorted and emitted.  (next[u] is now the end of user u.)
	 */
	pos = 0;
	for (u = 0; u < st->nusers; u++)
	{
		int64		n = next[u] - pos;

		if (u + SESS_PREFETCH_USERS < st->nusers)
		{
			int64		ahead = next[u + SESS_PREFETCH_USERS - 1];
			int64		end = next[u + SESS_PREFETCH_USERS];

			for (i = ahead; i < end; i++)
				SessPrefetch(grouped[i].ev);
		}
		SessSortSlots(grouped + pos, n, st);
		SessEmitUser(st, st->userv[u].user, grouped + pos, n);
		pos += n;
		CHECK_FOR_INTERRUPTS();
	}
	MemoryContextDelete(st->batchcxt);
	SessBatchStart(st, parent);
}

/* A column value as text: as is when binary-compatible, else its output. */
static text *
SessColumnText(SessState *st, int col, Datum value)
{
	if (st->as_text[col])
		return DatumGetTextPP(value);
	return cstring_to_text(OutputFunctionCall(&st->out[col], value));
}

/* Emit a row that belongs to no session (NULL user or ts), as it came. */
static void
SessEmitLoose(SessState *st, text *user, bool ts_null, TimestampTz ts, text *event_id)
{
	Datum		values[OUT_NCOLS];
	bool		nulls[OUT_NCOLS];
	int			i;

	for (i = 0; i < OUT_NCOLS; i++)
	{
		values[i] = (Datum) 0;
		nulls[i] = true;
	}
	if (st->per_session)
	{
		/* a session of its own is not what it is: counted apart */
		st->loose++;
		return;
	}
	if (user)
	{
		values[OUT_USER] = PointerGetDatum(user);
		nulls[OUT_USER] = false;
	}
	if (event_id)
	{
		values[OUT_EVENT_ID] = PointerGetDatum(event_id);
		nulls[OUT_EVENT_ID] = false;
	}
	if (!ts_null)
	{
		values[OUT_TS] = TimestampTzGetDatum(ts);
		nulls[OUT_TS] = false;
	}
	tuplestore_putvalues(st->out_store, st->out_desc, values, nulls);
}

/* DestReceiver: one row of the query. */
static bool
SessReceive(TupleTableSlot *slot, DestReceiver *self)
{
	SessState  *st = ((SessReceiver *) self)->state;
	MemoryContext old = MemoryContextSwitchTo(st->rowcxt);
	text	   *v[IN_NCOLS];
	TimestampTz ts = 0;
	bool		ts_null;
	int			i;

	slot_getsomeattrs(slot, st->natts);
	for (i = 0; i < IN_NCOLS; i++)
	{
		int			a = st->att[i];

		v[i] = NULL;
		if (i == IN_TS || a < 0 || slot->tts_isnull[a])
			continue;
		v[i] = SessColumnText(st, i, slot->tts_values[a]);
	}
	ts_null = slot->tts_isnull[st->att[IN_TS]];
	if (!ts_null)
		ts = DatumGetTimestampTz(slot->tts_values[st->att[IN_TS]]);

	if (v[IN_USER] == NULL || ts_null)
		SessEmitLoose(st, v[IN_USER], ts_null, ts, v[IN_EVENT_ID]);
	else
		SessAdd(st, v[IN_USER], ts, v[IN_EVENT_ID],
				v[IN_UTM_SOURCE], v[IN_UTM_CAMPAIGN]);

	MemoryContextSwitchTo(old);
	MemoryContextReset(st->rowcxt);
	if ((++st->rows_in & 0x3FF) == 0)
		CHECK_FOR_INTERRUPTS();
	return true;
}

/* DestReceiver callbacks with nothing to do. */
static void
SessStartup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
SessShutdown(DestReceiver *self)
{
}

static void
SessDestroy(DestReceiver *self)
{
}

/* Find the input columns by name in the query's result and check types. */
static void
SessBindColumns(SessState *st, TupleDesc desc)
{
	int			i,
				c;

	for (c = 0; c < IN_NCOLS; c++)
		st->att[c] = -1;
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(desc, i);

		if (attr->attisdropped)
			continue;
		for (c = 0; c < IN_NCOLS; c++)
		{
			if (strcmp(NameStr(attr->attname), SessInputNames[c]) != 0)
				continue;
			if (st->att[c] >= 0)
				ereport(ERROR,
						(errcode(ERRCODE_AMBIGUOUS_COLUMN),
						 errmsg("the events query returns more than one column named \"%s\"",
								SessInputNames[c])));
			st->att[c] = i;
		}
	}
	for (c = IN_USER; c <= IN_TS; c++)
		if (st->att[c] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("the events query returns no column named \"%s\"",
							SessInputNames[c]),
					 errhint("The query must return user_id and ts; event_id, utm_source and utm_campaign are used when present. Rename with AS.")));
	if (st->rules.split_on_campaign && st->att[IN_UTM_SOURCE] < 0 &&
		st->att[IN_UTM_CAMPAIGN] < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("split_on_campaign needs a column named utm_source or utm_campaign in the events query")));
	if (!st->rules.split_on_campaign)
		st->att[IN_UTM_SOURCE] = st->att[IN_UTM_CAMPAIGN] = -1;
	st->natts = 0;
	for (c = 0; c < IN_NCOLS; c++)
		st->natts = Max(st->natts, st->att[c] + 1);

	if (getBaseType(TupleDescAttr(desc, st->att[IN_TS])->atttypid) != TIMESTAMPTZOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"ts\" of the events query is of type %s, not timestamp with time zone",
						format_type_be(TupleDescAttr(desc, st->att[IN_TS])->atttypid)),
				 errhint("Cast it: ts::timestamptz (a timestamp without time zone is read in the session's TimeZone).")));

	for (c = 0; c < IN_NCOLS; c++)
	{
		Oid			type;
		Oid			func;
		bool		varlena;

		if (c == IN_TS || st->att[c] < 0)
			continue;
		type = getBaseType(TupleDescAttr(desc, st->att[c])->atttypid);
		st->as_text[c] = type == TEXTOID || type == VARCHAROID;
		if (!st->as_text[c])
		{
			getTypeOutputInfo(type, &func, &varlena);
			fmgr_info(func, &st->out[c]);
		}
	}
}

/* The body of sessionize() and sessions_of(). */
static Datum
SessRun(FunctionCallInfo fcinfo, bool per_session)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext callcxt;
	MemoryContext old;
	SessState  *st;
	SessReceiver recv;
	SPIPlanPtr	plan;
	List	   *sources;
	CachedPlanSource *source;
	SPIExecuteOptions options;
	char	   *query;
	int			ret;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the events query must not be NULL")));
	query = text_to_cstring(PG_GETARG_TEXT_PP(0));

	InitMaterializedSRF(fcinfo, 0);
	callcxt = AllocSetContextCreate(CurrentMemoryContext, "sessionize",
									ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(callcxt);

	st = palloc0(sizeof(SessState));
	st->per_session = per_session;
	st->rules.timeout = SessIntervalArg(fcinfo, 1, "timeout");
	st->rules.max_duration = SessIntervalArg(fcinfo, 2, "max_duration");
	st->rules.split_at_midnight = SessBoolArg(fcinfo, 3, "split_at_midnight");
	st->rules.split_on_campaign = SessBoolArg(fcinfo, 4, "split_on_campaign");
	st->id_offset = MAXALIGN(sizeof(SessEvent)) +
		(st->rules.split_on_campaign ? MAXALIGN(2 * sizeof(text *)) : 0);
	if (st->rules.split_at_midnight)
	{
		st->rules.tz = pg_tzset(cs_timezone);
		if (st->rules.tz == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown time zone in clickstream.timezone: \"%s\"", cs_timezone)));
	}

	st->out_store = rsinfo->setResult;
	st->out_desc = rsinfo->setDesc;
	st->rowcxt = AllocSetContextCreate(callcxt, "sessionize row",
									   ALLOCSET_SMALL_SIZES);
	initStringInfo(&st->idbuf);
	st->nbatch = 1;
	st->curbatch = 0;
	st->limit = (Size) work_mem * 1024;
	st->spill = palloc0(sizeof(Tuplestorestate *) * SESS_MAX_BATCHES);
	st->spilldesc = CreateTemplateTupleDesc(5);
	TupleDescInitEntry(st->spilldesc, 1, "user_id", TEXTOID, -1, 0);
	TupleDescInitEntry(st->spilldesc, 2, "ts", TIMESTAMPTZOID, -1, 0);
	TupleDescInitEntry(st->spilldesc, 3, "event_id", TEXTOID, -1, 0);
	TupleDescInitEntry(st->spilldesc, 4, "utm_source", TEXTOID, -1, 0);
	TupleDescInitEntry(st->spilldesc, 5, "utm_campaign", TEXTOID, -1, 0);
	st->spillslot = MakeSingleTupleTableSlot(st->spilldesc, &TTSOpsMinimalTuple);
	SessBatchStart(st, callcxt);

	/* run the query, its rows arriving at SessReceive */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(query, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not prepare the events query: %s",
			 SPI_result_code_string(SPI_result));
	sources = SPI_plan_get_plan_sources(plan);
	source = list_length(sources) == 1 ? linitial(sources) : NULL;
	if (source == NULL || source->resultDesc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the events query must be a single statement that returns rows"),
				 errhint("For example: SELECT user_id, ts, event_id FROM clickstream.events")));
	SessBindColumns(st, source->resultDesc);

	memset(&recv, 0, sizeof(recv));
	recv.pub.receiveSlot = SessReceive;
	recv.pub.rStartup = SessStartup;
	recv.pub.rShutdown = SessShutdown;
	recv.pub.rDestroy = SessDestroy;
	recv.pub.mydest = DestNone;
	recv.state = st;
	memset(&options, 0, sizeof(options));
	options.dest = (DestReceiver *) &recv;
	ret = SPI_execute_plan_extended(plan, &options);
	if (ret < 0)
		elog(ERROR, "events query failed: %s", SPI_result_code_string(ret));

	/* the batch in memory, then each batch from its file */
	for (;;)
	{
		Tuplestorestate *store;

		SessEmitBatch(st);
		if (++st->curbatch >= st->nbatch)
			break;
		store = st->spill[st->curbatch];
		if (store == NULL)
			continue;
		while (tuplestore_gettupleslot(store, true, false, st->spillslot))
		{
			Datum	   *v = st->spillslot->tts_values;
			bool	   *n = st->spillslot->tts_isnull;

			slot_getallattrs(st->spillslot);
			SessAdd(st, DatumGetTextPP(v[0]), DatumGetTimestampTz(v[1]),
					n[2] ? NULL : DatumGetTextPP(v[2]),
					n[3] ? NULL : DatumGetTextPP(v[3]),
					n[4] ? NULL : DatumGetTextPP(v[4]));
			if ((++st->rows_in & 0x3FF) == 0)
				CHECK_FOR_INTERRUPTS();
		}
		tuplestore_end(store);
		st->spill[st->curbatch] = NULL;
	}

	SPI_finish();
	ExecDropSingleTupleTableSlot(st->spillslot);
	if (st->loose > 0)
		ereport(NOTICE,
				(errmsg("%llu rows with a NULL user_id or ts belong to no session",
						(unsigned long long) st->loose)));
	MemoryContextSwitchTo(old);
	MemoryContextDelete(callcxt);
	return (Datum) 0;
}

/*
 * clickstream.sessionize(events text, timeout interval, max_duration interval,
 *		split_at_midnight boolean, split_on_campaign boolean)
 * RETURNS TABLE (user_id, event_id, ts, session_id, session_index,
 *		session_start, session_end, event_index, session_events)
 */
Datum
clickstream_sessionize(PG_FUNCTION_ARGS)
{
	return SessRun(fcinfo, false);
}

/*
 * clickstream.sessions_of(events text, ...same...)
 * RETURNS TABLE (user_id, session_id, session_index, session_start,
 *		session_end, events, first_event_id, last_event_id)
 */
Datum
clickstream_sessions_of(PG_FUNCTION_ARGS)
{
	return SessRun(fcinfo, true);
}
