/*-------------------------------------------------------------------------
 *
 * copy.c
 *	  Binary COPY into a table from tuples held in memory.
 *
 * The worker's bronze batches (bronze.c) and the refresh rows that cannot
 * take the direct path (writer.c) are written through the COPY machinery,
 * BeginCopyFrom() with a data source callback and CopyFrom(), so that the
 * table's triggers, defaults, constraints and indexes behave as for a COPY
 * statement.  This file is that data source: it serves the binary COPY
 * header, then the tuples a caller's callback hands it one at a time
 * (already in binary COPY tuple format), then the trailer.
 *
 * The callback COPY calls takes no argument of its own, so the source being
 * read is a file-level pointer, saved and restored around each COPY.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "commands/copy.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "storage/lockdefs.h"

/* Binary COPY file header: signature, flags, header extension length. */
static const char copy_header[] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
#define COPY_HEADER_LEN 19
static const char copy_trailer[] = "\377\377";
#define COPY_TRAILER_LEN 2

/* What one COPY reads: header, the caller's tuples, trailer. */
typedef struct CopySource
{
	CopyNextTuple next;
	void	   *arg;
	int			phase;			/* 0 header, 1 tuples, 2 trailer, 3 done */
	const char *piece;			/* what is being served */
	int			piece_len;
	int			piece_pos;		/* bytes of it already served */
} CopySource;

/* The source of the COPY running now. */
static CopySource *current_source = NULL;

/* Make the next piece of COPY data current; false once all is read. */
static bool
CopyNextPiece(CopySource *src)
{
	src->piece_pos = 0;
	switch (src->phase)
	{
		case 0:
			src->piece = copy_header;
			src->piece_len = COPY_HEADER_LEN;
			src->phase = 1;
			return true;
		case 1:
			if (src->next(src->arg, &src->piece, &src->piece_len))
				return true;
			src->piece = copy_trailer;
			src->piece_len = COPY_TRAILER_LEN;
			src->phase = 2;
			return true;
		default:
			src->phase = 3;
			src->piece_len = 0;
			return false;
	}
}

/* COPY data source callback: up to maxread bytes of the current source. */
static int
CopyRead(void *outbuf, int minread, int maxread)
{
	CopySource *src = current_source;
	char	   *out = outbuf;
	int			n = 0;

	while (n < maxread)
	{
		int			chunk;

		if (src->piece_pos >= src->piece_len && !CopyNextPiece(src))
			break;
		chunk = Min(src->piece_len - src->piece_pos, maxread - n);
		memcpy(out + n, src->piece + src->piece_pos, chunk);
		n += chunk;
		src->piece_pos += chunk;
	}
	return n;
}

/*
 * COPY into the columns attnames (a List of String) of rel, opened with
 * RowExclusiveLock, the tuples that next hands out (see CopyNextTuple);
 * returns the number of rows written (a BEFORE trigger may skip some).
 */
uint64
CopyFromMemory(Relation rel, List *attnames, CopyNextTuple next, void *arg)
{
	CopySource	src;
	uint64		written = 0;
	CopySource *saved = current_source;
	ParseState *pstate = make_parsestate(NULL);

	memset(&src, 0, sizeof(src));
	src.next = next;
	src.arg = arg;
	addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock, NULL, false, false);
	current_source = &src;
	PG_TRY();
	{
		CopyFromState cstate;

		cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false, CopyRead, attnames,
							   list_make1(makeDefElem("format", (Node *) makeString("binary"), -1)));
		written = CopyFrom(cstate);
		EndCopyFrom(cstate);
	}
	PG_FINALLY();
	{
		current_source = saved;
	}
	PG_END_TRY();
	free_parsestate(pstate);
	return written;
}
