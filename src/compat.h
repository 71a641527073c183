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

#endif							/* CLICKSTREAM_COMPAT_H */
