/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every PostgreSQL version shim of the extension, and nothing else.
 *
 * The extension is developed against PostgreSQL 15.  Anything that differs
 * between major versions is wrapped here so that the rest of the code reads
 * as if there were only one.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CLICKSTREAM_COMPAT_H
#define CLICKSTREAM_COMPAT_H

#if PG_VERSION_NUM < 150000
#error "clickstream requires PostgreSQL 15 or later"
#endif

/*
 * PostgreSQL 16 moved the per-relation permission info of a range table into
 * a list of its own; addRangeTableEntryForRelation() fills both, so the COPY
 * path needs no shim.  Add new ones below, each with the version it covers.
 */

/*
 * writer.c's direct insert path.  16: ExecInitRangeTable() takes the
 * permission infos, ExecInsertIndexTuples() an onlySummarizing flag, and the
 * root-to-partition map is built on demand.  (Only 15 is built and tested.)
 */
#if PG_VERSION_NUM >= 160000
#define ClickstreamInitRangeTable(estate, pstate) \
	ExecInitRangeTable((estate), (pstate)->p_rtable, (pstate)->p_rteperminfos)
#define ClickstreamInsertIndexTuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL, false)
#define ClickstreamRootToPartitionMap(rri, estate) \
	ExecGetRootToChildMap((rri), (estate))
#else
#define ClickstreamInitRangeTable(estate, pstate) \
	ExecInitRangeTable((estate), (pstate)->p_rtable)
#define ClickstreamInsertIndexTuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL)
#define ClickstreamRootToPartitionMap(rri, estate) \
	((rri)->ri_RootToPartitionMap)
#endif

/*
 * The "extra" of a setting's check hook.  16 keeps settings in a memory
 * context of its own and frees extras with guc_free(); 15 frees them with
 * free().
 */
#if PG_VERSION_NUM >= 160000
#define CsGucMalloc(size) guc_malloc(LOG, (size))
#else
#define CsGucMalloc(size) malloc(size)
#endif

#endif							/* CLICKSTREAM_COMPAT_H */
