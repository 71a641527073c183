/*-------------------------------------------------------------------------
 *
 * json.h
 *	  The JSON scanner of the event parser (json.c): scanned values are
 *	  spans of the payload.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CLICKSTREAM_JSON_H
#define CLICKSTREAM_JSON_H

#include "lib/stringinfo.h"

/* The kinds of JSON value (JV_NONE: none was found). */
typedef enum JsonKind
{
	JV_NONE, JV_STRING, JV_NUMBER, JV_TRUE, JV_FALSE, JV_NULL, JV_OBJECT, JV_ARRAY
} JsonKind;

/* A scanned value: its kind and where it lies in the payload. */
typedef struct JsonValue
{
	JsonKind	kind;
	const char *start;			/* first byte (the quote for strings) */
	const char *end;			/* one past the last byte */
	bool		escaped;		/* string containing backslash escapes */
	bool		integral;		/* number without fraction or exponent */
} JsonValue;

/* Scanner state over one payload. */
typedef struct JsonScan
{
	const char *p;
	const char *end;
	const char *error;			/* NULL while the document is valid */
	const char *reason;			/* invalid_json or number_out_of_range */
	bool		closed;			/* the object being read has ended */
} JsonScan;

extern const char *JsonKindName(JsonKind kind);
extern void JsonScanStart(JsonScan *s, const char *data, int len);
extern bool JsonScanFail(JsonScan *s, const char *reason, const char *error);
extern bool JsonScanValue(JsonScan *s, JsonValue *v, int depth);
extern void JsonObjectBegin(JsonScan *s);
extern bool JsonObjectNext(JsonScan *s, JsonValue *key, JsonValue *value);
extern void JsonUnescape(const JsonValue *v, StringInfo buf);

/* Skip JSON whitespace. */
static inline void
JsonSkipSpace(JsonScan *s)
{
	while (s->p < s->end &&
		   (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* Does a scanned string equal name?  An escaped one is decoded in scratch. */
static inline bool
JsonStringIs(const JsonValue *v, const char *name, size_t namelen, StringInfo scratch)
{
	if (!v->escaped)
		return (size_t) (v->end - v->start - 2) == namelen &&
			memcmp(v->start + 1, name, namelen) == 0;
	JsonUnescape(v, scratch);
	return (size_t) scratch->len == namelen && memcmp(scratch->data, name, namelen) == 0;
}

#endif							/* CLICKSTREAM_JSON_H */
