/*-------------------------------------------------------------------------
 *
 * sessionize.c
 *	  clickstream.sessionize(query, ...): every row of a query's result,
 *	  assigned to a session of its user.
 *
 * The SQL way to sessionize sorts all events by user and time, then runs
 * lag() and a running sum over the sorted whole.  This function never sorts
 * globally.  It runs the query and, as rows arrive, appends each to one of
 * up to 256 partitions chosen by its user's hash (a radix partitioning: one
 * sequential write per row, no lookup).  Then, one partition after another,
 * it groups the partition's rows by user in a small hash table that stays in
 * the CPU cache, sorts each user's run (small, usually) and walks it once.
 *
 * Memory follows work_mem the way a hash join does.  When the events held
 * exceed it, the number of batches doubles and the users of the other
 * batches go to temporary files (BufFiles of the same records), to be read
 * back and processed
 * one batch after another.  The events of one user are never split, so a
 * user with more events than work_mem holds is processed in memory anyway:
 * memory is then about one and a half times that user's events.
 *
 * Rules, per user, events in (ts, event_id) order: a new session starts when
 * the gap to the previous event exceeds the timeout, when the event is more
 * than max_duration after the session's first event, at midnight in
 * clickstream.timezone (option), or when the event carries a campaign
 * (utm_source, utm_campaign) other than the one of the session's first event
 * (option).  docs/sessions-and-funnels.md ("Sessions") is the reference.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include <sys/mman.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/tablespace.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "port/pg_bswap.h"
#include "storage/buffile.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "util.h"

PG_FUNCTION_INFO_V1(clickstream_sessionize);
PG_FUNCTION_INFO_V1(clickstream_sessions_of);

/* Most bits of a user's hash that choose its partition (256 partitions). */
#ifndef SESS_MAX_PART_BITS
#define SESS_MAX_PART_BITS 8
#endif
/* Bytes of work_mem per partition at least (fewer partitions below that). */
#define SESS_PART_MEM (256 * 1024)
/* Bytes of a partition's first chunk; the next ones double up to the last. */
#define SESS_CHUNK_MIN 1024
#define SESS_CHUNK_MAX (64 * 1024)
/*
 * With a work_mem of SESS_SLAB_MIN_LIMIT or more, chunks are cut from slabs
 * of work_mem / 16 up to SESS_SLAB_MAX bytes, whose aligned interior is
 * advised to the kernel as huge pages: filling hundreds of megabytes of
 * fresh memory 4 kB page fault after page fault is a good part of the time.
 */
#define SESS_SLAB_MIN_LIMIT ((Size) 64 * 1024 * 1024)
#define SESS_SLAB_MAX ((Size) 32 * 1024 * 1024)
#define SESS_HUGE_PAGE ((Size) 2 * 1024 * 1024)
/* Most batches (temporary files) a call splits its input into. */
#define SESS_MAX_BATCHES 1024
/* Events ahead whose records are fetched into the cache while emitting. */
#define SESS_PREFETCH_AHEAD 16

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

/*
 * A row of sessionize() as heap_fill_tuple() lays it out when user_id and
 * event_id are short varlenas (a 1-byte header, no alignment): the header,
 * the two texts, then from the next 8-aligned offset a tail of fixed layout.
 * SessEmitSession() forms such rows itself (see SessFastRowsOk()).
 */
#define SESS_ROW_HOFF MAXALIGN(offsetof(HeapTupleHeaderData, t_bits))
#define SESS_TAIL_TS 0			/* ts */
#define SESS_TAIL_ID 8			/* session_id */
#define SESS_TAIL_INDEX 24		/* session_index, then 4 bytes of padding */
#define SESS_TAIL_START 32		/* session_start */
#define SESS_TAIL_END 40		/* session_end */
#define SESS_TAIL_EVENT_INDEX 48	/* event_index */
#define SESS_TAIL_EVENTS 56		/* session_events */
#define SESS_TAIL_LEN 64
#define SESS_ROW_MAX (SESS_ROW_HOFF + 2 * VARATT_SHORT_MAX + 8 + SESS_TAIL_LEN)

/* Output columns of sessions_of() (one row per session), as declared. */
enum
{
	SOUT_USER, SOUT_SESSION_ID, SOUT_SESSION_INDEX, SOUT_SESSION_START,
	SOUT_SESSION_END, SOUT_EVENTS, SOUT_FIRST_EVENT_ID, SOUT_LAST_EVENT_ID,
	SOUT_NCOLS
};

/*
 * One event held in memory: a record in a chunk of its user's partition.
 * With split_on_campaign two uint32 follow, the offsets of its utm_source
 * and utm_campaign (see SessRecCampaign()).  Then its texts, as varlenas: the
 * user id at SessState.user_off, the event_id, utm_source and utm_campaign
 * at their offsets from the record (0 when NULL).  A text of up to 126 bytes
 * has a 1-byte header (else 4 bytes, aligned), so each can be returned as a
 * Datum as it is.
 */
typedef struct SessRec
{
	TimestampTz ts;
	uint32		hash;			/* of the user id */
	uint32		size;			/* bytes of the record, MAXALIGNed */
	uint32		id_off;			/* offset of the event_id, 0 when NULL */
	uint32		spare;			/* 0: no byte of a record is left unset */
} SessRec;

/* A chunk of a partition: records, in arrival order, after this header. */
typedef struct SessChunk
{
	struct SessChunk *next;
	Size		used;			/* bytes of records (see SessPartsClose()) */
} SessChunk;

#define SESS_CHUNK_HDR MAXALIGN(sizeof(SessChunk))
#define SessChunkData(c) ((char *) (c) + SESS_CHUNK_HDR)

/*
 * A partition of the batch in memory: its chunks, and the free part of the
 * last one (kept here, next to the other partitions' for a row's writes).
 */
typedef struct SessPart
{
	char	   *pos;			/* where the next record goes */
	char	   *end;			/* end of the last chunk */
	int64		nevents;
	SessChunk  *head;
	SessChunk  *tail;
} SessPart;

/* An event as grouped and sorted: its time and its record. */
typedef struct SessSlot
{
	TimestampTz ts;
	SessRec    *rec;
} SessSlot;

/*
 * An entry of a partition's users' hash table: the user (in its first
 * record) and its index in the partition's order of first appearance.
 */
typedef struct SessUser
{
	const text *user;
	uint32		hash;
	uint32		index;
	char		status;
} SessUser;

#define SH_PREFIX sessusers
#define SH_ELEMENT_TYPE SessUser
#define SH_KEY_TYPE const text *
#define SH_KEY user
#define SH_HASH_KEY(tb, k) hash_bytes((const unsigned char *) VARDATA_ANY(k), VARSIZE_ANY_EXHDR(k))
#define SH_EQUAL(tb, a, b) UtilTextEqual(a, b)
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
	MemoryContext batchcxt;		/* its chunks */
	int			part_bits;		/* log2 of the number of partitions */
	SessPart	parts[1 << SESS_MAX_PART_BITS];
	Size		user_off;		/* of the user id in a record */
	const text *last_user;		/* user of the previous event, if in memory */
	uint32		last_hash;		/* and its hash */
	Size		slab_size;		/* 0: chunks are allocated one by one */
	char	   *slab_pos;		/* free part of the current slab */
	char	   *slab_end;
	Size		used;			/* bytes of the batch in memory */
	Size		limit;			/* grow (split) beyond this */

	/* batches */
	int			nbatch;			/* a power of 2 */
	int			curbatch;
	BufFile   **spill;			/* [SESS_MAX_BATCHES] of records, NULL until
								 * used */
	char	   *spillbuf;		/* a record on its way to a file */
	Size		spillbuf_size;

	/* output */
	bool		per_session;	/* sessions_of(): a row per session */
	Tuplestorestate *out_store;
	TupleDesc	out_desc;
	bool		fast_rows;		/* form per-event rows in rowbuf */
	char	   *rowbuf;			/* [SESS_ROW_MAX], MAXALIGNed, its header set */
	StringInfoData idbuf;		/* session id input */
	uint64		rows_in;
	uint64		loose;			/* rows with a NULL user or ts */
} SessState;

/* A text of a record at offset off, NULL for offset 0. */
static inline text *
SessRecText(const SessRec *rec, uint32 off)
{
	return off != 0 ? (text *) ((char *) rec + off) : NULL;
}

/* The user id of a record. */
static inline text *
SessRecUser(const SessState *st, const SessRec *rec)
{
	return (text *) ((char *) rec + st->user_off);
}

/* The event_id of a record, NULL when NULL. */
static inline text *
SessRecId(const SessRec *rec)
{
	return SessRecText(rec, rec->id_off);
}

/* The offsets of utm_source and utm_campaign (split_on_campaign). */
static inline uint32 *
SessRecCampaign(const SessRec *rec)
{
	return (uint32 *) ((char *) rec + sizeof(SessRec));
}

/* The DestReceiver the query's rows arrive at. */
typedef struct SessReceiver
{
	DestReceiver pub;
	SessState  *state;
} SessReceiver;

static void SessAdd(SessState *st, const text *user, TimestampTz ts,
					const text *event_id, const text *utm_source,
					const text *utm_campaign);

/* Equality of two nullable text values, NULL equal to NULL. */
static inline bool
SessTextEqualNull(const text *a, const text *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return UtilTextEqual(a, b);
}

/* Byte order of two nullable text values, NULL last (the C collation). */
static inline int
SessTextCompare(const text *a, const text *b)
{
	if (a == NULL || b == NULL)
		return (a == NULL) - (b == NULL);
	return UtilTextCompare(a, b);
}

/* The documented event order: ts, then event_id (byte order, NULL last). */
static inline int
SessSlotCompare(const SessSlot *a, const SessSlot *b)
{
	if (a->ts != b->ts)
		return a->ts < b->ts ? -1 : 1;
	return SessTextCompare(SessRecId(a->rec), SessRecId(b->rec));
}

#define ST_SORT SessSortSlots
#define ST_ELEMENT_TYPE SessSlot
#define ST_COMPARE(a, b) SessSlotCompare(a, b)
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"


/* An interval as microseconds; errors for NULL, months or a value <= 0. */
static int64
SessIntervalArg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	int64		usec;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name)));
	usec = UtilIntervalUsec(PG_GETARG_INTERVAL_P(argno), name,
							"Months have no fixed length; write days or hours, e.g. '30 days'.");
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

/* Start an empty batch in memory: a new context, empty partitions. */
static void
SessBatchStart(SessState *st, MemoryContext parent)
{
	st->batchcxt = AllocSetContextCreate(parent, "sessionize batch",
										 ALLOCSET_DEFAULT_SIZES);
	memset(st->parts, 0, sizeof(SessPart) << st->part_bits);
	st->last_user = NULL;
	st->slab_pos = st->slab_end = NULL;
	st->used = 0;
}

/* The batch a user's hash belongs to (bits apart from the table's). */
static inline int
SessBatchOf(SessState *st, uint32 hash)
{
	return (int) (murmurhash32(hash) & (uint32) (st->nbatch - 1));
}

/*
 * The partition a user's hash belongs to: its top bits (the batch takes a
 * remix, the hash tables the low bits).
 */
static inline SessPart *
SessPartOf(SessState *st, uint32 hash)
{
	return &st->parts[((uint64) hash << st->part_bits) >> 32];
}

/*
 * Memory for a chunk of alloc bytes: from the current slab (a new one when
 * it has no room left), or on its own when larger than a tenth of a slab.
 */
static SessChunk *
SessChunkAlloc(SessState *st, Size alloc)
{
	SessChunk  *c;

	if (st->slab_size == 0 || alloc > st->slab_size / 10)
	{
		st->used += alloc;
		return MemoryContextAllocHuge(st->batchcxt, alloc);
	}
	if ((Size) (st->slab_end - st->slab_pos) < alloc)
	{
		char	   *slab = MemoryContextAllocHuge(st->batchcxt, st->slab_size);

#ifdef MADV_HUGEPAGE
		char	   *from = (char *) TYPEALIGN(SESS_HUGE_PAGE, slab);
		char	   *to = (char *) TYPEALIGN_DOWN(SESS_HUGE_PAGE, slab + st->slab_size);

		/* advice only: without huge pages, the slab is as good */
		if (from < to)
			(void) madvise(from, to - from, MADV_HUGEPAGE);
#endif
		st->slab_pos = slab;
		st->slab_end = slab + st->slab_size;
		st->used += st->slab_size;
	}
	c = (SessChunk *) st->slab_pos;
	st->slab_pos += alloc;
	return c;
}

/*
 * Start a new chunk at the end of a partition, for a record of size bytes
 * at least: twice as large as the last, up to SESS_CHUNK_MAX.
 */
static void
SessPartGrow(SessState *st, SessPart *part, Size size)
{
	Size		alloc = SESS_CHUNK_MIN;
	SessChunk  *c;

	if (part->tail != NULL)
	{
		part->tail->used = part->pos - SessChunkData(part->tail);
		alloc = Min((part->end - (char *) part->tail) * 2, SESS_CHUNK_MAX);
	}
	alloc = MAXALIGN(Max(alloc, SESS_CHUNK_HDR + size));
	c = SessChunkAlloc(st, alloc);
	c->next = NULL;
	c->used = 0;
	if (part->tail != NULL)
		part->tail->next = c;
	else
		part->head = c;
	part->tail = c;
	part->pos = SessChunkData(c);
	part->end = (char *) c + alloc;
}

/* Room for a record of size bytes at the end of a partition. */
static inline SessRec *
SessPartAlloc(SessState *st, SessPart *part, Size size)
{
	SessRec    *rec;

	if (unlikely((Size) (part->end - part->pos) < size))
		SessPartGrow(st, part, size);
	rec = (SessRec *) part->pos;
	part->pos += size;
	part->nevents++;
	return rec;
}

/* Record in the last chunk of each partition how much of it is used. */
static void
SessPartsClose(SessState *st)
{
	int			p;

	for (p = 0; p < (1 << st->part_bits); p++)
	{
		SessPart   *part = &st->parts[p];

		if (part->tail != NULL)
			part->tail->used = part->pos - SessChunkData(part->tail);
	}
}

/*
 * Copy len bytes, len < 256: in overlapping blocks of fixed size, which the
 * compiler turns into a few vector moves (a memcpy of a small bounded length
 * it may turn into "rep movs", slow to start).
 */
static inline void
SessCopyShort(char *dst, const char *src, Size len)
{
	Size		i;

	if (len >= 16)
	{
		for (i = 0; i + 16 < len; i += 16)
			memcpy(dst + i, src + i, 16);
		memcpy(dst + len - 16, src + len - 16, 16);
	}
	else if (len >= 8)
	{
		memcpy(dst, src, 8);
		memcpy(dst + len - 8, src + len - 8, 8);
	}
	else
	{
		for (i = 0; i < len; i++)
			dst[i] = src[i];
	}
}

/*
 * Where a text goes in a record when the record's bytes so far are *off:
 * returns its offset and advances *off past it.  Short texts take a 1-byte
 * header, unaligned; longer ones a 4-byte header, aligned.
 */
static inline uint32
SessPlaceText(Size *off, const text *t)
{
	Size		len = VARSIZE_ANY_EXHDR(t);
	Size		at;

	if (len <= VARATT_SHORT_MAX - VARHDRSZ_SHORT)
	{
		at = *off;
		*off = at + VARHDRSZ_SHORT + len;
	}
	else
	{
		at = INTALIGN(*off);
		*off = at + VARHDRSZ + len;
	}
	return (uint32) at;
}

/* Write a text where SessPlaceText() placed it. */
static inline void
SessPutText(SessRec *rec, uint32 at, const text *t)
{
	char	   *dst = (char *) rec + at;
	Size		len = VARSIZE_ANY_EXHDR(t);

	if (len <= VARATT_SHORT_MAX - VARHDRSZ_SHORT)
	{
		SET_VARSIZE_SHORT(dst, VARHDRSZ_SHORT + len);
		SessCopyShort(dst + VARHDRSZ_SHORT, VARDATA_ANY(t), len);
	}
	else
	{
		SET_VARSIZE(dst, VARHDRSZ + len);
		memcpy(dst + VARHDRSZ, VARDATA_ANY(t), len);
	}
}

/*
 * The layout of an event's record: its size, returned, and the offsets of
 * its event_id, utm_source and utm_campaign in at[] (0 when NULL).
 */
static Size
SessRecLayout(SessState *st, const text *user, const text *event_id,
			  const text *utm_source, const text *utm_campaign, uint32 *at)
{
	Size		off = st->user_off;

	(void) SessPlaceText(&off, user);
	at[0] = event_id ? SessPlaceText(&off, event_id) : 0;
	at[1] = at[2] = 0;
	if (st->rules.split_on_campaign)
	{
		at[1] = utm_source ? SessPlaceText(&off, utm_source) : 0;
		at[2] = utm_campaign ? SessPlaceText(&off, utm_campaign) : 0;
	}
	off = MAXALIGN(off);
	if (off > PG_UINT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("an event's user_id, event_id and campaign take more than 4 GB")));
	return off;
}

/* Write an event's record, of the layout SessRecLayout() gave. */
static void
SessRecFill(SessState *st, SessRec *rec, Size size, const uint32 *at,
			uint32 hash, const text *user, TimestampTz ts,
			const text *event_id, const text *utm_source,
			const text *utm_campaign)
{
	int			i;

	/*
	 * Records go to temporary files as they are: zero their padding (at the
	 * end, and before a text with a 4-byte header) before the texts land.
	 */
	memset((char *) rec + size - MAXIMUM_ALIGNOF, 0, MAXIMUM_ALIGNOF);
	for (i = 0; i < 3; i++)
		if (at[i] != 0 && at[i] % 4 == 0)
			memset((char *) rec + at[i] - 3, 0, 3);
	rec->ts = ts;
	rec->hash = hash;
	rec->size = (uint32) size;
	rec->id_off = at[0];
	rec->spare = 0;
	SessPutText(rec, st->user_off, user);
	if (event_id)
		SessPutText(rec, at[0], event_id);
	if (st->rules.split_on_campaign)
	{
		SessRecCampaign(rec)[0] = at[1];
		SessRecCampaign(rec)[1] = at[2];
		if (utm_source)
			SessPutText(rec, at[1], utm_source);
		if (utm_campaign)
			SessPutText(rec, at[2], utm_campaign);
	}
}

/* Room for a record of size bytes on its way to a file. */
static SessRec *
SessSpillBuf(SessState *st, Size size)
{
	if (size > st->spillbuf_size)
	{
		st->spillbuf_size = Max(size, 2 * st->spillbuf_size);
		st->spillbuf = repalloc_huge(st->spillbuf, st->spillbuf_size);
	}
	return (SessRec *) st->spillbuf;
}

/* Write a record to the temporary file of its batch. */
static void
SessSpill(SessState *st, int batch, const SessRec *rec)
{
	if (st->spill[batch] == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(st->spill));

		PrepareTempTablespaces();
		st->spill[batch] = BufFileCreateTemp(false);
		MemoryContextSwitchTo(old);
	}
	BufFileWrite(st->spill[batch], (void *) rec, rec->size);
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
	SessPart   *parts;
	int			nparts = 1 << st->part_bits;
	int			p;
	int64		i = 0;

	if (st->nbatch >= SESS_MAX_BATCHES)
	{
		st->limit = st->used * 2;
		return;
	}
	SessPartsClose(st);
	parts = palloc(sizeof(SessPart) * nparts);
	memcpy(parts, st->parts, sizeof(SessPart) * nparts);
	st->nbatch *= 2;
	SessBatchStart(st, parent);
	for (p = 0; p < nparts; p++)
	{
		SessChunk  *c;

		for (c = parts[p].head; c != NULL; c = c->next)
		{
			Size		off;

			for (off = 0; off < c->used;)
			{
				SessRec    *rec = (SessRec *) (SessChunkData(c) + off);
				int			batch = SessBatchOf(st, rec->hash);

				if (batch != st->curbatch)
					SessSpill(st, batch, rec);
				else
				{
					SessRec    *copy = SessPartAlloc(st, SessPartOf(st, rec->hash),
													 rec->size);

					memcpy(copy, rec, rec->size);
				}
				off += rec->size;
				if ((++i & 0xFFFF) == 0)
					CHECK_FOR_INTERRUPTS();
			}
		}
	}
	pfree(parts);
	MemoryContextDelete(oldcxt);

	if (st->used > st->limit / 2)
		st->limit = st->used * 2;
}

/* Take one event: into memory if its user's batch is the current one. */
static void
SessAdd(SessState *st, const text *user, TimestampTz ts, const text *event_id,
		const text *utm_source, const text *utm_campaign)
{
	uint32		hash;
	uint32		at[3];
	Size		size;
	SessRec    *rec;

	/* an empty utm_source or utm_campaign is none, as in the marts */
	if (utm_source != NULL && VARSIZE_ANY_EXHDR(utm_source) == 0)
		utm_source = NULL;
	if (utm_campaign != NULL && VARSIZE_ANY_EXHDR(utm_campaign) == 0)
		utm_campaign = NULL;

	/*
	 * Input grouped by user (silver is written sorted by user, minute by
	 * minute) comes as runs of one user: those need no hashing.
	 */
	if (st->last_user != NULL && UtilTextEqual(user, st->last_user))
		hash = st->last_hash;
	else
	{
		int			batch;

		hash = hash_bytes((const unsigned char *) VARDATA_ANY(user),
						  VARSIZE_ANY_EXHDR(user));
		batch = SessBatchOf(st, hash);
		if (batch != st->curbatch)
		{
			st->last_user = NULL;
			size = SessRecLayout(st, user, event_id, utm_source, utm_campaign, at);
			rec = SessSpillBuf(st, size);
			SessRecFill(st, rec, size, at, hash, user, ts, event_id,
						utm_source, utm_campaign);
			SessSpill(st, batch, rec);
			return;
		}
	}
	size = SessRecLayout(st, user, event_id, utm_source, utm_campaign, at);
	rec = SessPartAlloc(st, SessPartOf(st, hash), size);
	SessRecFill(st, rec, size, at, hash, user, ts, event_id, utm_source,
				utm_campaign);
	st->last_user = SessRecUser(st, rec);
	st->last_hash = hash;

	if (st->used > st->limit)
		SessGrow(st);
}

/*
 * Read back the records of a batch's file: into memory those of the current
 * batch, to their later batch's file the others (the batches have doubled
 * since they were written).
 */
static void
SessReadBatch(SessState *st, BufFile *file)
{
	SessRec		hdr;

	if (BufFileSeek(file, 0, 0, SEEK_SET) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not rewind a sessionize temporary file: %m")));
	for (;;)
	{
		size_t		got = BufFileRead(file, &hdr, sizeof(SessRec));
		int			batch;
		SessRec    *rec;

		if (got == 0)
			break;
		if (got != sizeof(SessRec) || hdr.size < sizeof(SessRec))
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read a sessionize temporary file: read only %zu of %zu bytes",
							got, sizeof(SessRec))));
		batch = SessBatchOf(st, hdr.hash);
		if (batch == st->curbatch)
			rec = SessPartAlloc(st, SessPartOf(st, hdr.hash), hdr.size);
		else
			rec = SessSpillBuf(st, hdr.size);
		memcpy(rec, &hdr, sizeof(SessRec));
		got = BufFileRead(file, (char *) rec + sizeof(SessRec),
						  hdr.size - sizeof(SessRec));
		if (got != hdr.size - sizeof(SessRec))
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read a sessionize temporary file: read only %zu of %zu bytes",
							got, hdr.size - sizeof(SessRec))));
		if (batch != st->curbatch)
			SessSpill(st, batch, rec);
		else if (st->used > st->limit)
			SessGrow(st);
		if ((++st->rows_in & 0x3FF) == 0)
			CHECK_FOR_INTERRUPTS();
	}
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
	text	   *event_id = SessRecId(first->rec);
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
SessEmitSession(SessState *st, const text *user, SessSlot *ev, int64 n,
				int32 session_index)
{
	Datum		values[OUT_NCOLS];
	bool		nulls[OUT_NCOLS];
	pg_uuid_t	id;
	int64		i;
	bool		fast;
	HeapTupleData row;
	int64		tailbuf[SESS_TAIL_LEN / sizeof(int64)];
	char	   *tail = (char *) tailbuf;

	SessSessionId(st, user, &ev[0], &id);
	memset(nulls, 0, sizeof(nulls));
	if (st->per_session)
	{
		text	   *first = SessRecId(ev[0].rec);
		text	   *last = SessRecId(ev[n - 1].rec);

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
	fast = st->fast_rows && VARATT_IS_SHORT(user);
	if (fast)
	{
		/* the user and the tail's columns of the session, once */
		memcpy(st->rowbuf + SESS_ROW_HOFF, user, VARSIZE_SHORT(user));
		memset(tail, 0, SESS_TAIL_LEN);
		memcpy(tail + SESS_TAIL_ID, id.data, UUID_LEN);
		memcpy(tail + SESS_TAIL_INDEX, &session_index, sizeof(int32));
		memcpy(tail + SESS_TAIL_START, &ev[0].ts, sizeof(int64));
		memcpy(tail + SESS_TAIL_END, &ev[n - 1].ts, sizeof(int64));
		memcpy(tail + SESS_TAIL_EVENTS, &n, sizeof(int64));
		row.t_data = (HeapTupleHeader) st->rowbuf;
		ItemPointerSetInvalid(&row.t_self);
		row.t_tableOid = InvalidOid;
	}
	for (i = 0; i < n; i++)
	{
		text	   *event_id = SessRecId(ev[i].rec);
		int64		event_index = i + 1;

		if (fast && event_id != NULL && VARATT_IS_SHORT(event_id))
		{
			Size		at = SESS_ROW_HOFF + VARSIZE_SHORT(user);
			Size		end = at + VARSIZE_SHORT(event_id);
			Size		tail_at = TYPEALIGN(8, end);

			SessCopyShort(st->rowbuf + at, (const char *) event_id,
						  VARSIZE_SHORT(event_id));
			memset(st->rowbuf + end, 0, tail_at - end);
			memcpy(st->rowbuf + tail_at, tail, SESS_TAIL_LEN);
			memcpy(st->rowbuf + tail_at + SESS_TAIL_TS, &ev[i].ts, sizeof(int64));
			memcpy(st->rowbuf + tail_at + SESS_TAIL_EVENT_INDEX, &event_index,
				   sizeof(int64));
			row.t_len = tail_at + SESS_TAIL_LEN;
			tuplestore_puttuple(st->out_store, &row);
			continue;
		}
		values[OUT_EVENT_ID] = PointerGetDatum(event_id);
		nulls[OUT_EVENT_ID] = event_id == NULL;
		values[OUT_TS] = TimestampTzGetDatum(ev[i].ts);
		values[OUT_EVENT_INDEX] = Int64GetDatum(event_index);
		tuplestore_putvalues(st->out_store, st->out_desc, values, nulls);
	}
}

/* Walk one user's sorted events and emit them session by session. */
static void
SessEmitUser(SessState *st, const text *user, SessSlot *ev, int64 n)
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
				uint32	   *cur = SessRecCampaign(ev[i].rec);
				uint32	   *start = SessRecCampaign(ev[first].rec);

				if (cur[0] != 0 || cur[1] != 0)
					split = !SessTextEqualNull(SessRecText(ev[i].rec, cur[0]),
											   SessRecText(ev[first].rec, start[0])) ||
						!SessTextEqualNull(SessRecText(ev[i].rec, cur[1]),
										   SessRecText(ev[first].rec, start[1]));
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

/* What emitting the partitions of a batch works with, sized for the largest. */
typedef struct SessEmitWork
{
	sessusers_hash *users;		/* user -> index, for one partition */
	const text **userv;			/* index -> user */
	int64	   *next;			/* index -> count, then where its events go */
	uint32	   *uidx;			/* user index of each event, arrival order */
	SessSlot   *grouped;		/* events grouped by user */
} SessEmitWork;

/*
 * Emit every user of one partition.  The events are grouped by user with a
 * counting sort (two sequential passes over the partition's records, and a
 * hash table of its users only: they fit in the cache), then each user's run
 * is sorted on its own.
 */
static void
SessEmitPart(SessState *st, SessPart *part, SessEmitWork *w)
{
	SessChunk  *c;
	Size		off;
	int64		i = 0;
	int64		pos = 0;
	uint32		nusers = 0;
	uint32		u;
	const text *prev = NULL;
	uint32		prev_hash = 0;
	uint32		prev_index = 0;

	/* number the users, count their events */
	sessusers_reset(w->users);
	for (c = part->head; c != NULL; c = c->next)
	{
		for (off = 0; off < c->used;)
		{
			SessRec    *rec = (SessRec *) (SessChunkData(c) + off);
			const text *user = SessRecUser(st, rec);

			if (prev == NULL || rec->hash != prev_hash ||
				!UtilTextEqual(user, prev))
			{
				SessUser   *entry;
				bool		found;

				entry = sessusers_insert_hash(w->users, user, rec->hash, &found);
				if (!found)
				{
					entry->index = nusers;
					w->userv[nusers] = user;
					w->next[nusers] = 0;
					nusers++;
				}
				prev = user;
				prev_hash = rec->hash;
				prev_index = entry->index;
			}
			w->next[prev_index]++;
			w->uidx[i++] = prev_index;
			off += rec->size;
		}
	}
	Assert(i == part->nevents);

	/* next[u]: where user u's events go */
	for (u = 0; u < nusers; u++)
	{
		int64		n = w->next[u];

		w->next[u] = pos;
		pos += n;
	}
	i = 0;
	for (c = part->head; c != NULL; c = c->next)
	{
		for (off = 0; off < c->used;)
		{
			SessRec    *rec = (SessRec *) (SessChunkData(c) + off);
			SessSlot   *slot = &w->grouped[w->next[w->uidx[i++]]++];

			slot->ts = rec->ts;
			slot->rec = rec;
			off += rec->size;
		}
	}

	/*
	 * Each user in turn (next[u] is now the end of user u).  Their records
	 * lie anywhere in the partition: those of the next events are fetched
	 * into the cache while this user is sorted and emitted.
	 */
	pos = 0;
	i = 0;
	for (u = 0; u < nusers; u++)
	{
		int64		n = w->next[u] - pos;
		int64		upto = Min(pos + Min(n, 4 * SESS_PREFETCH_AHEAD) + SESS_PREFETCH_AHEAD,
							   part->nevents);

		for (i = Max(i, pos); i < upto; i++)
			SessPrefetch(w->grouped[i].rec);

		SessSortSlots(w->grouped + pos, n);
		SessEmitUser(st, w->userv[u], w->grouped + pos, n);
		pos += n;
		CHECK_FOR_INTERRUPTS();
	}
}

/* Emit every partition of the batch in memory, then empty it. */
static void
SessEmitBatch(SessState *st)
{
	MemoryContext parent = MemoryContextGetParent(st->batchcxt);
	int			nparts = 1 << st->part_bits;
	int64		most = 0;
	int			p;
	SessEmitWork w;

	SessPartsClose(st);
	for (p = 0; p < nparts; p++)
		most = Max(most, st->parts[p].nevents);
	if (most > 0)
	{
		w.users = sessusers_create(st->batchcxt, 1024, NULL);
		w.userv = MemoryContextAllocHuge(st->batchcxt, sizeof(text *) * most);
		w.next = MemoryContextAllocHuge(st->batchcxt, sizeof(int64) * most);
		w.uidx = MemoryContextAllocHuge(st->batchcxt, sizeof(uint32) * most);
		w.grouped = MemoryContextAllocHuge(st->batchcxt, sizeof(SessSlot) * most);
		for (p = 0; p < nparts; p++)
			if (st->parts[p].nevents > 0)
				SessEmitPart(st, &st->parts[p], &w);
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

/*
 * Whether sessionize()'s rows can be formed by SessEmitSession() itself:
 * the columns are those it was written for, and doubles are 8-aligned.
 */
static bool
SessFastRowsOk(TupleDesc desc)
{
	static const Oid types[OUT_NCOLS] = {
		TEXTOID, TEXTOID, TIMESTAMPTZOID, UUIDOID, INT4OID, TIMESTAMPTZOID,
		TIMESTAMPTZOID, INT8OID, INT8OID
	};
	int			i;

	if (ALIGNOF_DOUBLE != 8 || MAXIMUM_ALIGNOF != 8 || desc->natts != OUT_NCOLS)
		return false;
	for (i = 0; i < OUT_NCOLS; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(desc, i);

		if (attr->attisdropped || attr->atttypid != types[i])
			return false;
		if (attr->attlen == -1 ? attr->attstorage == TYPSTORAGE_PLAIN :
			attr->attalign != (attr->attlen == 4 ? TYPALIGN_INT :
							   attr->attlen == 16 ? TYPALIGN_CHAR : TYPALIGN_DOUBLE))
			return false;
	}
	return true;
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
	st->user_off = MAXALIGN(sizeof(SessRec)) +
		(st->rules.split_on_campaign ? MAXALIGN(2 * sizeof(uint32)) : 0);
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
	st->fast_rows = !per_session && SessFastRowsOk(st->out_desc);
	if (st->fast_rows)
	{
		HeapTupleHeader td;

		st->rowbuf = palloc0(SESS_ROW_MAX);
		td = (HeapTupleHeader) st->rowbuf;
		HeapTupleHeaderSetNatts(td, OUT_NCOLS);
		td->t_infomask = HEAP_HASVARWIDTH;
		td->t_hoff = SESS_ROW_HOFF;
	}
	st->rowcxt = AllocSetContextCreate(callcxt, "sessionize row",
									   ALLOCSET_SMALL_SIZES);
	initStringInfo(&st->idbuf);
	st->nbatch = 1;
	st->curbatch = 0;
	st->limit = (Size) work_mem * 1024;
	if (st->limit >= SESS_SLAB_MIN_LIMIT)
		st->slab_size = Min(st->limit / 16, SESS_SLAB_MAX);
	while (st->part_bits < SESS_MAX_PART_BITS &&
		   ((Size) SESS_PART_MEM << (st->part_bits + 1)) <= st->limit)
		st->part_bits++;
	st->spill = palloc0(sizeof(BufFile *) * SESS_MAX_BATCHES);
	st->spillbuf_size = 1024;
	st->spillbuf = palloc(st->spillbuf_size);
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
	/*
	 * Read with the caller's snapshot, not a new one: the sessions of a query
	 * must be those of the data the calling statement sees (verify_gold()
	 * compares clickstream.sessions with the sessions of silver in one
	 * statement, while refresh steps commit).
	 */
	options.read_only = true;
	ret = SPI_execute_plan_extended(plan, &options);
	if (ret < 0)
		elog(ERROR, "events query failed: %s", SPI_result_code_string(ret));

	/* the batch in memory, then each batch from its file */
	for (;;)
	{
		SessEmitBatch(st);
		if (++st->curbatch >= st->nbatch)
			break;
		if (st->spill[st->curbatch] == NULL)
			continue;
		SessReadBatch(st, st->spill[st->curbatch]);
		BufFileClose(st->spill[st->curbatch]);
		st->spill[st->curbatch] = NULL;
	}

	SPI_finish();
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
