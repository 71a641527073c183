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
#include "common/md5.h"
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

/* Bytes of one arena block. */
#define SESS_ARENA_BLOCK (64 * 1024)
/* Most batches (temporary files) a call splits its input into. */
#define SESS_MAX_BATCHES 1024
/* In-memory size of a batch's tuplestore before it goes to its file. */
#define SESS_SPILL_KB 64

/* Input columns, found by name in the query's result. */
enum
{
	IN_USER, IN_TS, IN_EVENT_ID, IN_UTM_SOURCE, IN_UTM_CAMPAIGN, IN_NCOLS
};
static const char *const SessInputNames[IN_NCOLS] = {
	"user_id", "ts", "event_id", "utm_source", "utm_campaign"
};

/* Output columns, as declared in SQL. */
enum
{
	OUT_USER, OUT_EVENT_ID, OUT_TS, OUT_SESSION_ID, OUT_SESSION_INDEX,
	OUT_SESSION_START, OUT_SESSION_END, OUT_EVENT_INDEX, OUT_SESSION_EVENTS,
	OUT_NCOLS
};

/* One event held in memory; strings are text varlenas in the arena. */
typedef struct SessEvent
{
	TimestampTz ts;
	text	   *event_id;		/* NULL when NULL */
	text	   *utm_source;		/* only with split_on_campaign */
	text	   *utm_campaign;
	struct SessEvent *next;		/* next event of the same user */
} SessEvent;

/* One user held in memory, with its events as a list. */
typedef struct SessUser
{
	text	   *user;			/* key, in the arena */
	uint32		hash;
	char		status;
	int64		nevents;
	SessEvent  *head;
	SessEvent  *tail;
} SessUser;

static inline bool SessTextEqual(const text *a, const text *b);

#define SH_PREFIX sessusers
#define SH_ELEMENT_TYPE SessUser
#define SH_KEY_TYPE text *
#define SH_KEY user
#define SH_HASH_KEY(tb, key) hash_bytes((const unsigned char *) VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key))
#define SH_EQUAL(tb, a, b) SessTextEqual(a, b)
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
	bool		as_text[IN_NCOLS];	/* binary-compatible with text */
	FmgrInfo	out[IN_NCOLS];	/* output functions of the others */
	MemoryContext rowcxt;		/* reset after every row */

	/* the batch in memory */
	MemoryContext batchcxt;		/* arena blocks and the users' table */
	sessusers_hash *users;
	char	   *arena;			/* free part of the current block */
	Size		arena_left;
	Size		used;			/* bytes of the batch in memory */
	Size		limit;			/* grow (split) beyond this */
	bool		growing;		/* SessGrow is copying users over */

	/* batches */
	int			nbatch;			/* a power of 2 */
	int			curbatch;
	Tuplestorestate **spill;	/* [SESS_MAX_BATCHES], NULL until used */
	TupleDesc	spilldesc;
	TupleTableSlot *spillslot;

	/* output */
	Tuplestorestate *out_store;
	TupleDesc	out_desc;
	MemoryContext usercxt;		/* reset after every user */
	StringInfoData idbuf;		/* session id input */
	uint64		rows_in;
} SessState;

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
SessEventCompare(const SessEvent *a, const SessEvent *b)
{
	if (a->ts != b->ts)
		return a->ts < b->ts ? -1 : 1;
	return SessTextCompare(a->event_id, b->event_id);
}

typedef SessEvent *SessEventPtr;

#define ST_SORT SessSortEvents
#define ST_ELEMENT_TYPE SessEventPtr
#define ST_COMPARE(a, b) SessEventCompare(*(a), *(b))
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

/* Memory for the batch in memory, from the arena (never freed alone). */
static void *
SessArenaAlloc(SessState *st, Size size)
{
	void	   *p;

	size = MAXALIGN(size);
	if (size > st->arena_left)
	{
		Size		block = Max(size, SESS_ARENA_BLOCK);

		st->arena = MemoryContextAllocHuge(st->batchcxt, block);
		st->arena_left = block;
		st->used += block;
	}
	p = st->arena;
	st->arena += size;
	st->arena_left -= size;
	return p;
}

/* A copy of a (nullable) text value in the arena, with a 4-byte header. */
static text *
SessArenaText(SessState *st, const text *t)
{
	Size		len;
	text	   *copy;

	if (t == NULL)
		return NULL;
	len = VARSIZE_ANY_EXHDR(t);
	copy = SessArenaAlloc(st, VARHDRSZ + len);
	SET_VARSIZE(copy, VARHDRSZ + len);
	memcpy(VARDATA(copy), VARDATA_ANY(t), len);
	return copy;
}

/* Start an empty batch in memory: a new arena and users' table. */
static void
SessBatchStart(SessState *st, MemoryContext parent)
{
	st->batchcxt = AllocSetContextCreate(parent, "sessionize batch",
										 ALLOCSET_DEFAULT_SIZES);
	st->users = sessusers_create(st->batchcxt, 1024, NULL);
	st->arena = NULL;
	st->arena_left = 0;
	st->used = st->users->size * sizeof(SessUser);
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
 * Double the number of batches: users of the other half go to their files,
 * the rest is copied to a fresh arena.  When that frees little (one user or
 * a few hold most of the memory), the limit rises instead of splitting on.
 */
static void
SessGrow(SessState *st)
{
	MemoryContext oldcxt = st->batchcxt;
	MemoryContext parent = MemoryContextGetParent(oldcxt);
	sessusers_hash *olds = st->users;
	sessusers_iterator it;
	SessUser   *u;

	if (st->nbatch >= SESS_MAX_BATCHES)
	{
		st->limit = st->used * 2;
		return;
	}
	st->nbatch *= 2;
	SessBatchStart(st, parent);
	st->growing = true;

	sessusers_start_iterate(olds, &it);
	while ((u = sessusers_iterate(olds, &it)) != NULL)
	{
		int			batch = SessBatchOf(st, u->hash);
		SessEvent  *e;

		if (batch != st->curbatch)
		{
			for (e = u->head; e != NULL; e = e->next)
				SessSpill(st, batch, u->user, e->ts, e->event_id,
						  e->utm_source, e->utm_campaign);
		}
		else
		{
			for (e = u->head; e != NULL; e = e->next)
				SessAdd(st, u->user, e->ts, e->event_id,
						e->utm_source, e->utm_campaign);
		}
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
	SessEvent  *e;
	bool		found;
	uint32		size_before;

	hash = hash_bytes((const unsigned char *) VARDATA_ANY(user),
					  VARSIZE_ANY_EXHDR(user));
	batch = SessBatchOf(st, hash);
	if (batch != st->curbatch)
	{
		SessSpill(st, batch, user, ts, event_id, utm_source, utm_campaign);
		return;
	}

	size_before = st->users->size;
	u = sessusers_insert_hash(st->users, user, hash, &found);
	if (!found)
	{
		u->user = SessArenaText(st, user);
		u->nevents = 0;
		u->head = u->tail = NULL;
		if (st->users->size != size_before)
			st->used += (st->users->size - size_before) * sizeof(SessUser);
	}
	e = SessArenaAlloc(st, sizeof(SessEvent));
	e->ts = ts;
	e->event_id = SessArenaText(st, event_id);
	e->utm_source = SessArenaText(st, utm_source);
	e->utm_campaign = SessArenaText(st, utm_campaign);
	e->next = NULL;
	if (u->tail)
		u->tail->next = e;
	else
		u->head = e;
	u->tail = e;
	u->nevents++;

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

/* The deterministic id of a session: a name-based (MD5, version 3) UUID. */
static pg_uuid_t *
SessSessionId(SessState *st, const text *user, const SessEvent *first)
{
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));
	uint64		ts = pg_hton64((uint64) first->ts);
	const char *errstr = NULL;

	resetStringInfo(&st->idbuf);
	appendBinaryStringInfo(&st->idbuf, VARDATA_ANY(user), VARSIZE_ANY_EXHDR(user));
	appendStringInfoChar(&st->idbuf, '\0');
	appendBinaryStringInfo(&st->idbuf, (const char *) &ts, sizeof(ts));
	if (first->event_id)
		appendBinaryStringInfo(&st->idbuf, VARDATA_ANY(first->event_id),
							   VARSIZE_ANY_EXHDR(first->event_id));
	if (!pg_md5_binary(st->idbuf.data, st->idbuf.len, id->data, &errstr))
		elog(ERROR, "could not compute a session id: %s", errstr);
	id->data[6] = (id->data[6] & 0x0f) | 0x30;
	id->data[8] = (id->data[8] & 0x3f) | 0x80;
	return id;
}

/* Emit the rows of one session: events ev[0..n) of user. */
static void
SessEmitSession(SessState *st, Datum user, const text *user_text,
				SessEvent **ev, int64 n, int32 session_index)
{
	Datum		values[OUT_NCOLS];
	bool		nulls[OUT_NCOLS];
	int64		i;

	memset(nulls, 0, sizeof(nulls));
	values[OUT_USER] = user;
	values[OUT_SESSION_ID] = UUIDPGetDatum(SessSessionId(st, user_text, ev[0]));
	values[OUT_SESSION_INDEX] = Int32GetDatum(session_index);
	values[OUT_SESSION_START] = TimestampTzGetDatum(ev[0]->ts);
	values[OUT_SESSION_END] = TimestampTzGetDatum(ev[n - 1]->ts);
	values[OUT_SESSION_EVENTS] = Int64GetDatum(n);
	for (i = 0; i < n; i++)
	{
		values[OUT_EVENT_ID] = PointerGetDatum(ev[i]->event_id);
		nulls[OUT_EVENT_ID] = ev[i]->event_id == NULL;
		values[OUT_TS] = TimestampTzGetDatum(ev[i]->ts);
		values[OUT_EVENT_INDEX] = Int64GetDatum(i + 1);
		tuplestore_putvalues(st->out_store, st->out_desc, values, nulls);
	}
}

/* Sort one user's events and emit them session by session. */
static void
SessEmitUser(SessState *st, SessUser *u)
{
	const SessRules *r = &st->rules;
	MemoryContext old = MemoryContextSwitchTo(st->usercxt);
	SessEvent **ev;
	SessEvent  *e;
	int64		n = u->nevents;
	int64		i;
	int64		first = 0;
	int32		session_index = 0;
	int64		day_prev = 0;
	Datum		user = PointerGetDatum(u->user);

	ev = MemoryContextAllocHuge(st->usercxt, sizeof(SessEvent *) * n);
	i = 0;
	for (e = u->head; e != NULL; e = e->next)
		ev[i++] = e;
	SessSortEvents(ev, n);

	if (r->split_at_midnight)
		day_prev = SessLocalDay(r, ev[0]->ts);
	for (i = 1; i < n; i++)
	{
		const SessEvent *cur = ev[i];
		const SessEvent *start = ev[first];
		bool		split;

		split = SessFurtherThan(ev[i - 1]->ts, cur->ts, r->timeout) ||
			SessFurtherThan(start->ts, cur->ts, r->max_duration);
		if (r->split_at_midnight)
		{
			int64		day = SessLocalDay(r, cur->ts);

			split = split || day != day_prev;
			day_prev = day;
		}
		if (!split && r->split_on_campaign &&
			(cur->utm_source != NULL || cur->utm_campaign != NULL))
			split = !SessTextEqualNull(cur->utm_source, start->utm_source) ||
				!SessTextEqualNull(cur->utm_campaign, start->utm_campaign);
		if (split)
		{
			if (session_index == PG_INT32_MAX)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("user has more than %d sessions", PG_INT32_MAX)));
			SessEmitSession(st, user, u->user, ev + first, i - first, ++session_index);
			first = i;
		}
		if ((i & 0xFFFF) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	if (session_index == PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("user has more than %d sessions", PG_INT32_MAX)));
	SessEmitSession(st, user, u->user, ev + first, n - first, ++session_index);

	MemoryContextSwitchTo(old);
	MemoryContextReset(st->usercxt);
}

/* Emit every user of the batch in memory, then empty it. */
static void
SessEmitBatch(SessState *st)
{
	MemoryContext parent = MemoryContextGetParent(st->batchcxt);
	sessusers_iterator it;
	SessUser   *u;

	sessusers_start_iterate(st->users, &it);
	while ((u = sessusers_iterate(st->users, &it)) != NULL)
	{
		SessEmitUser(st, u);
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

/*
 * clickstream.sessionize(query text, timeout interval, max_duration interval,
 *		split_at_midnight boolean, split_on_campaign boolean)
 * RETURNS TABLE (user_id, event_id, ts, session_id, session_index,
 *		session_start, session_end, event_index, session_events)
 */
Datum
clickstream_sessionize(PG_FUNCTION_ARGS)
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
	st->rules.timeout = SessIntervalArg(fcinfo, 1, "timeout");
	st->rules.max_duration = SessIntervalArg(fcinfo, 2, "max_duration");
	st->rules.split_at_midnight = SessBoolArg(fcinfo, 3, "split_at_midnight");
	st->rules.split_on_campaign = SessBoolArg(fcinfo, 4, "split_on_campaign");
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
	st->usercxt = AllocSetContextCreate(callcxt, "sessionize user",
										ALLOCSET_DEFAULT_SIZES);
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
	MemoryContextSwitchTo(old);
	MemoryContextDelete(callcxt);
	return (Datum) 0;
}
