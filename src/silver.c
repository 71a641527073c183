/*-------------------------------------------------------------------------
 *
 * silver.c
 *	  The event parser: one bronze payload in, one typed silver row or one
 *	  rejection reason out.
 *
 * SilverParseMessage() is what a refresh step (refresh.c) runs over every
 * bronze row, and clickstream.parse_event(payload) what a user runs to see
 * why a dead letter was refused.  It never raises an error for bad data:
 * every problem becomes a reason and a human-readable detail, so that one bad
 * message can never stop a refresh.  The JSON scanner is a strict RFC 8259
 * parser written for this one format: it validates the whole document, keeps
 * the known fields as spans of the payload and rebuilds only the unknown
 * keys into jsonb.  Anything that jsonb_in or numeric_in could refuse later
 * (\u0000, lone surrogates, huge exponents, deep nesting) is refused here
 * first.
 *
 * The event format is defined once, in the README ("Event format").
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(clickstream_parse_event);

/* Longest identifier-like string value accepted (indexes hold these). */
#define SILVER_MAX_ID_BYTES 512
/* Deepest nesting of arrays and objects accepted in a payload. */
#define SILVER_MAX_DEPTH 64
/* Numbers must fit numeric comfortably: digits and exponent are bounded. */
#define SILVER_MAX_NUMBER_DIGITS 1000
#define SILVER_MAX_EXPONENT 1000
/* Prices above this are refused as number_out_of_range. */
#define SILVER_MAX_PRICE "1000000000000000"
/* Larger payloads are refused (jsonb and palloc have limits of their own). */
#define SILVER_MAX_PAYLOAD (16 * 1024 * 1024)
/* Longest excerpt of a value quoted in a detail message, in bytes. */
#define SILVER_EXCERPT 80

/* The known keys of the event format, and the column each one fills. */
typedef enum
{
	F_EVENT_ID, F_EVENT_TYPE, F_USER_ID, F_TS, F_PRODUCT_ID, F_CATEGORY,
	F_PRICE, F_QUANTITY, F_ORDER_ID, F_PAGE_URL, F_REFERRER, F_UTM_SOURCE,
	F_UTM_MEDIUM, F_UTM_CAMPAIGN, F_DEVICE, F_COUNTRY, NUM_FIELDS
} SilverField;

#define SILVER_KEY(name) name, sizeof(name) - 1

static const struct
{
	const char *name;
	int			namelen;
	int			column;			/* text column it fills, or -1 */
	bool		required;
	bool		identifier;		/* bounded by SILVER_MAX_ID_BYTES */
}			silver_fields[NUM_FIELDS] = {
	{SILVER_KEY("event_id"), SILVER_COL_EVENT_ID, true, true},
	{SILVER_KEY("event_type"), SILVER_COL_EVENT_TYPE, true, true},
	{SILVER_KEY("user_id"), SILVER_COL_USER_ID, true, true},
	{SILVER_KEY("ts"), -1, true, false},
	{SILVER_KEY("product_id"), SILVER_COL_PRODUCT_ID, false, true},
	{SILVER_KEY("category"), SILVER_COL_CATEGORY, false, true},
	{SILVER_KEY("price"), -1, false, false},
	{SILVER_KEY("quantity"), -1, false, false},
	{SILVER_KEY("order_id"), SILVER_COL_ORDER_ID, false, true},
	{SILVER_KEY("page_url"), SILVER_COL_PAGE_URL, false, false},
	{SILVER_KEY("referrer"), SILVER_COL_REFERRER, false, false},
	{SILVER_KEY("utm_source"), SILVER_COL_UTM_SOURCE, false, true},
	{SILVER_KEY("utm_medium"), SILVER_COL_UTM_MEDIUM, false, true},
	{SILVER_KEY("utm_campaign"), SILVER_COL_UTM_CAMPAIGN, false, true},
	{SILVER_KEY("device"), SILVER_COL_DEVICE, false, true},
	{SILVER_KEY("country"), SILVER_COL_COUNTRY, false, true},
};

typedef enum
{
	JV_NONE, JV_STRING, JV_NUMBER, JV_TRUE, JV_FALSE, JV_NULL, JV_OBJECT, JV_ARRAY
} JsonKind;

static const char *const json_kind_names[] = {
	"nothing", "a string", "a number", "true", "false", "null", "an object", "an array"
};

/* A scanned value: its kind and where it lies in the payload. */
typedef struct
{
	JsonKind	kind;
	const char *start;			/* first byte (the quote for strings) */
	const char *end;			/* one past the last byte */
	bool		escaped;		/* string containing backslash escapes */
	bool		integral;		/* number without fraction or exponent */
} JsonValue;

/* Scanner state over one payload. */
typedef struct
{
	const char *p;
	const char *end;
	const char *error;			/* NULL while the document is valid */
	const char *reason;			/* invalid_json or number_out_of_range */
} JsonScan;

static bool SilverScanValue(JsonScan *s, JsonValue *v, int depth);

/* Record the first scan error; always returns false. */
static bool
SilverScanFail(JsonScan *s, const char *reason, const char *error)
{
	if (s->error == NULL)
	{
		s->error = error;
		s->reason = reason;
	}
	return false;
}

/* Skip JSON whitespace. */
static inline void
SilverSkipSpace(JsonScan *s)
{
	while (s->p < s->end &&
		   (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* Value of one hex digit, or -1. */
static inline int
SilverHex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Read the four hex digits of a \u escape at p; -1 if they are not there. */
static int
SilverHex4(const char *p, const char *end)
{
	int			cp = 0;

	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++)
	{
		int			h = SilverHex(p[i]);

		if (h < 0)
			return -1;
		cp = (cp << 4) | h;
	}
	return cp;
}

/* Scan a string starting at its opening quote; validates every escape. */
static bool
SilverScanString(JsonScan *s, JsonValue *v)
{
	const char *p = s->p + 1;

	v->kind = JV_STRING;
	v->start = s->p;
	v->escaped = false;
	while (p < s->end)
	{
		unsigned char c = (unsigned char) *p;

		/* most bytes are neither a quote, a backslash nor a control byte */
		if (c >= 0x20 && c != '"' && c != '\\')
		{
			p++;
			continue;
		}
		if (c == '"')
		{
			s->p = v->end = p + 1;
			return true;
		}
		if (c < 0x20)
			return SilverScanFail(s, "invalid_json", "control character inside a string");
		if (c != '\\')
		{
			p++;
			continue;
		}
		v->escaped = true;
		if (p + 1 >= s->end)
			break;
		switch (p[1])
		{
			case '"':
			case '\\':
			case '/':
			case 'b':
			case 'f':
			case 'n':
			case 'r':
			case 't':
				p += 2;
				break;
			case 'u':
				{
					int			cp = SilverHex4(p + 2, s->end);

					if (cp < 0)
						return SilverScanFail(s, "invalid_json", "invalid \\u escape");
					if (cp == 0)
						return SilverScanFail(s, "invalid_json", "\\u0000 is not supported in text");
					p += 6;
					if (cp >= 0xDC00 && cp <= 0xDFFF)
						return SilverScanFail(s, "invalid_json", "Unicode low surrogate without a high surrogate");
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						int			lo = (s->end - p >= 6 && p[0] == '\\' && p[1] == 'u') ?
							SilverHex4(p + 2, s->end) : -1;

						if (lo < 0xDC00 || lo > 0xDFFF)
							return SilverScanFail(s, "invalid_json", "Unicode high surrogate without a low surrogate");
						p += 6;
					}
					break;
				}
			default:
				return SilverScanFail(s, "invalid_json", "invalid escape in a string");
		}
	}
	return SilverScanFail(s, "invalid_json", "unterminated string");
}

/* Scan a number (RFC 8259 grammar, bounded size). */
static bool
SilverScanNumber(JsonScan *s, JsonValue *v)
{
	const char *p = s->p;
	int			digits = 0;
	int			exponent = 0;

	v->kind = JV_NUMBER;
	v->start = p;
	v->integral = true;
	if (*p == '-')
		p++;
	if (p >= s->end || !isdigit((unsigned char) *p))
		return SilverScanFail(s, "invalid_json", "invalid number");
	if (*p == '0')
		p++, digits++;
	else
		while (p < s->end && isdigit((unsigned char) *p))
			p++, digits++;
	if (p < s->end && *p == '.')
	{
		v->integral = false;
		p++;
		if (p >= s->end || !isdigit((unsigned char) *p))
			return SilverScanFail(s, "invalid_json", "invalid number");
		while (p < s->end && isdigit((unsigned char) *p))
			p++, digits++;
	}
	if (p < s->end && (*p == 'e' || *p == 'E'))
	{
		v->integral = false;
		p++;
		if (p < s->end && (*p == '+' || *p == '-'))
			p++;
		if (p >= s->end || !isdigit((unsigned char) *p))
			return SilverScanFail(s, "invalid_json", "invalid number");
		while (p < s->end && isdigit((unsigned char) *p))
		{
			if (exponent <= SILVER_MAX_EXPONENT)
				exponent = exponent * 10 + (*p - '0');
			p++;
		}
	}
	if (digits > SILVER_MAX_NUMBER_DIGITS || exponent > SILVER_MAX_EXPONENT)
		return SilverScanFail(s, "number_out_of_range", "a number has too many digits or too large an exponent");
	s->p = v->end = p;
	return true;
}

/* Match a literal (true, false, null). */
static bool
SilverScanLiteral(JsonScan *s, JsonValue *v, const char *word, JsonKind kind)
{
	size_t		len = strlen(word);

	if ((size_t) (s->end - s->p) < len || memcmp(s->p, word, len) != 0)
		return SilverScanFail(s, "invalid_json", "invalid token");
	v->kind = kind;
	v->start = s->p;
	s->p = v->end = s->p + len;
	return true;
}

/* Scan an object or array (contents validated, not kept). */
static bool
SilverScanContainer(JsonScan *s, JsonValue *v, int depth)
{
	bool		object = *s->p == '{';
	char		close = object ? '}' : ']';
	JsonValue	item;

	if (depth >= SILVER_MAX_DEPTH)
		return SilverScanFail(s, "invalid_json", "nested too deeply");
	v->kind = object ? JV_OBJECT : JV_ARRAY;
	v->start = s->p++;
	SilverSkipSpace(s);
	if (s->p < s->end && *s->p == close)
	{
		s->p++;
		v->end = s->p;
		return true;
	}
	for (;;)
	{
		if (object)
		{
			if (s->p >= s->end || *s->p != '"')
				return SilverScanFail(s, "invalid_json", "expected a key");
			if (!SilverScanString(s, &item))
				return false;
			SilverSkipSpace(s);
			if (s->p >= s->end || *s->p != ':')
				return SilverScanFail(s, "invalid_json", "expected ':'");
			s->p++;
			SilverSkipSpace(s);
		}
		if (!SilverScanValue(s, &item, depth + 1))
			return false;
		SilverSkipSpace(s);
		if (s->p < s->end && *s->p == ',')
		{
			s->p++;
			SilverSkipSpace(s);
			continue;
		}
		if (s->p < s->end && *s->p == close)
		{
			s->p++;
			v->end = s->p;
			return true;
		}
		return SilverScanFail(s, "invalid_json",
							  s->p >= s->end ? "unexpected end of input" : "expected ',' or a closing bracket");
	}
}

/* Scan any value at s->p (whitespace already skipped). */
static bool
SilverScanValue(JsonScan *s, JsonValue *v, int depth)
{
	if (s->p >= s->end)
		return SilverScanFail(s, "invalid_json", "unexpected end of input");
	switch (*s->p)
	{
		case '"':
			return SilverScanString(s, v);
		case '{':
		case '[':
			return SilverScanContainer(s, v, depth);
		case 't':
			return SilverScanLiteral(s, v, "true", JV_TRUE);
		case 'f':
			return SilverScanLiteral(s, v, "false", JV_FALSE);
		case 'n':
			return SilverScanLiteral(s, v, "null", JV_NULL);
		default:
			if (*s->p == '-' || isdigit((unsigned char) *s->p))
				return SilverScanNumber(s, v);
			return SilverScanFail(s, "invalid_json", "invalid token");
	}
}

/* Append code point cp as UTF-8. */
static void
SilverAppendUtf8(StringInfo buf, int cp)
{
	unsigned char u[4];

	unicode_to_utf8((pg_wchar) cp, u);
	appendBinaryStringInfo(buf, (char *) u, pg_utf_mblen(u));
}

/* Decode a scanned string (without its quotes) into buf. */
static void
SilverUnescape(const JsonValue *v, StringInfo buf)
{
	const char *p = v->start + 1;
	const char *end = v->end - 1;

	resetStringInfo(buf);
	while (p < end)
	{
		const char *q = p;

		while (q < end && *q != '\\')
			q++;
		appendBinaryStringInfo(buf, p, q - p);
		if (q >= end)
			break;
		switch (q[1])
		{
			case 'b':
				appendStringInfoChar(buf, '\b');
				break;
			case 'f':
				appendStringInfoChar(buf, '\f');
				break;
			case 'n':
				appendStringInfoChar(buf, '\n');
				break;
			case 'r':
				appendStringInfoChar(buf, '\r');
				break;
			case 't':
				appendStringInfoChar(buf, '\t');
				break;
			case 'u':
				{
					int			cp = SilverHex4(q + 2, end);

					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						cp = 0x10000 + ((cp - 0xD800) << 10) + (SilverHex4(q + 8, end) - 0xDC00);
						q += 6;
					}
					SilverAppendUtf8(buf, cp);
					p = q + 6;
					continue;
				}
			default:			/* " \ / */
				appendStringInfoChar(buf, q[1]);
				break;
		}
		p = q + 2;
	}
}

/* Does a key (a scanned string) equal name?  Escaped keys are decoded. */
static bool
SilverKeyIs(const JsonValue *key, const char *name, size_t namelen, StringInfo scratch)
{
	if (!key->escaped)
		return (size_t) (key->end - key->start - 2) == namelen &&
			memcmp(key->start + 1, name, namelen) == 0;
	SilverUnescape(key, scratch);
	return (size_t) scratch->len == namelen && memcmp(scratch->data, name, namelen) == 0;
}

/*
 * Which known field a key names, or -1.  Producers send keys in the same
 * order every time: the search starts after the field found last.
 */
static int
SilverLookupKey(const JsonValue *key, StringInfo scratch)
{
	static int	next = 0;

	for (int i = 0; i < NUM_FIELDS; i++)
	{
		int			f = (next + i) % NUM_FIELDS;

		if (SilverKeyIs(key, silver_fields[f].name, silver_fields[f].namelen, scratch))
		{
			next = (f + 1) % NUM_FIELDS;
			return f;
		}
	}
	return -1;
}

/* Parse up to n digits at *p as an integer; -1 when not all are digits. */
static int
SilverDigits(const char **p, const char *end, int n)
{
	int			r = 0;

	if (end - *p < n)
		return -1;
	for (int i = 0; i < n; i++)
	{
		if (!isdigit((unsigned char) (*p)[i]))
			return -1;
		r = r * 10 + ((*p)[i] - '0');
	}
	*p += n;
	return r;
}

/*
 * Parse an ISO-8601 timestamp with zone:
 * YYYY-MM-DD(T|t| )HH:MM[:SS[.fraction]](Z|z|+HH[:MM]|-HH[:MM]|+HHMM|-HHMM).
 * Fractions beyond microseconds are truncated.
 */
static bool
SilverParseIso(const char *p, const char *end, TimestampTz *result)
{
	struct pg_tm tm;
	fsec_t		fsec = 0;
	int			tz = 0;

	memset(&tm, 0, sizeof(tm));
	if ((tm.tm_year = SilverDigits(&p, end, 4)) < 1 || p >= end || *p++ != '-' ||
		(tm.tm_mon = SilverDigits(&p, end, 2)) < 1 || tm.tm_mon > 12 || p >= end || *p++ != '-' ||
		(tm.tm_mday = SilverDigits(&p, end, 2)) < 1 ||
		tm.tm_mday > day_tab[isleap(tm.tm_year)][tm.tm_mon - 1] || p >= end ||
		(*p != 'T' && *p != 't' && *p != ' '))
		return false;
	p++;
	if ((tm.tm_hour = SilverDigits(&p, end, 2)) < 0 || tm.tm_hour > 23 || p >= end || *p++ != ':' ||
		(tm.tm_min = SilverDigits(&p, end, 2)) < 0 || tm.tm_min > 59)
		return false;
	if (p < end && *p == ':')
	{
		p++;
		if ((tm.tm_sec = SilverDigits(&p, end, 2)) < 0 || tm.tm_sec > 59)
			return false;
		if (p < end && (*p == '.' || *p == ','))
		{
			int			scale = 100000;

			p++;
			if (p >= end || !isdigit((unsigned char) *p))
				return false;
			while (p < end && isdigit((unsigned char) *p))
			{
				fsec += (*p - '0') * scale;
				scale /= 10;
				p++;
			}
		}
	}
	if (p >= end)
		return false;			/* no zone */
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		int			sign = *p++ == '+' ? 1 : -1;
		int			hh = SilverDigits(&p, end, 2);
		int			mm = 0;

		if (hh < 0 || hh > 18)
			return false;
		if (p < end && *p == ':')
		{
			p++;
			if ((mm = SilverDigits(&p, end, 2)) < 0)
				return false;
		}
		else if (p < end && (mm = SilverDigits(&p, end, 2)) < 0)
			return false;
		if (mm > 59)
			return false;
		tz = -sign * (hh * SECS_PER_HOUR + mm * SECS_PER_MINUTE);
	}
	else
		return false;
	if (p != end)
		return false;
	return tm2timestamp(&tm, fsec, &tz, result) == 0;
}

/*
 * Turn epoch milliseconds, given as the text of a JSON number or a string of
 * digits, into a timestamp within years 1..9999.  Plain decimals are read
 * exactly (fractions beyond microseconds truncated toward zero); only a
 * number with an exponent goes through a double.
 */
static bool
SilverEpochMs(const char *p, const char *end, TimestampTz *result)
{
	/* 0001-01-01 and 10000-01-01 in Unix epoch microseconds */
	const int64 lo = INT64CONST(-62135596800000000);
	const int64 hi = INT64CONST(253402300800000000);
	bool		negative = false;
	int64		ms = 0;
	int64		us;
	int			frac = 0;
	int			scale = 100;
	const char *q;

	if (p < end && *p == '-')
		negative = true, p++;
	if (p >= end || !isdigit((unsigned char) *p))
		return false;
	for (q = p; q < end && (isdigit((unsigned char) *q) || *q == '.'); q++)
		;
	if (q != end)
	{
		/* an exponent: rare enough for a double */
		char		num[64];
		double		v;

		if (end - p >= (ptrdiff_t) sizeof(num))
			return false;
		memcpy(num, p, end - p);
		num[end - p] = '\0';
		v = strtod(num, NULL) * 1000.0;
		if (!(v < (double) hi && v >= 0))
			return false;
		us = (int64) v;
	}
	else
	{
		for (; p < end && *p != '.'; p++)
		{
			ms = ms * 10 + (*p - '0');
			if (ms > hi / 1000)
				return false;
		}
		if (p < end)
			for (p++; p < end; p++)
			{
				frac += (*p - '0') * scale;
				scale /= 10;
			}
		us = ms * 1000 + frac;
	}
	if (negative)
		us = -us;
	if (us < lo || us >= hi)
		return false;
	*result = us - (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	return true;
}

/* Parse the ts value (ISO string, or epoch milliseconds as number or digits). */
static bool
SilverParseTs(const JsonValue *v, StringInfo scratch, TimestampTz *result)
{
	const char *p;
	const char *end;

	if (v->kind != JV_STRING)
		return SilverEpochMs(v->start, v->end, result);
	if (v->escaped)
	{
		SilverUnescape(v, scratch);
		p = scratch->data;
		end = p + scratch->len;
	}
	else
	{
		p = v->start + 1;
		end = v->end - 1;
	}
	if (end > p && strspn(p, "0123456789") >= (size_t) (end - p))
		return SilverEpochMs(p, end, result);
	return SilverParseIso(p, end, result);
}

/* Cached time zone of clickstream.timezone. */
static pg_tz *
SilverTimezone(void)
{
	static char *cached_name = NULL;
	static pg_tz *cached = NULL;

	if (cached == NULL || cached_name == NULL || strcmp(cached_name, cs_timezone) != 0)
	{
		pg_tz	   *tz = pg_tzset(cs_timezone);

		if (tz == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid clickstream.timezone \"%s\"", cs_timezone)));
		if (cached_name)
			free(cached_name);
		cached_name = strdup(cs_timezone);
		if (cached_name == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		cached = tz;
	}
	return cached;
}

/* Reject: fill reason and detail, every other column NULL. */
static void
SilverReject(SilverRow *row, const char *reason, const char *fmt,...) pg_attribute_printf(3, 4);

static void
SilverReject(SilverRow *row, const char *reason, const char *fmt,...)
{
	StringInfoData detail;

	for (int i = 0; i < SILVER_NUM_COLS; i++)
		row->nulls[i] = true;
	initStringInfo(&detail);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&detail, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&detail, needed);
	}
	row->values[SILVER_COL_REASON] = CStringGetTextDatum(reason);
	row->values[SILVER_COL_DETAIL] = CStringGetTextDatum(detail.data);
	row->nulls[SILVER_COL_REASON] = row->nulls[SILVER_COL_DETAIL] = false;
}

/* Length of the excerpt of v quoted in a message: whole UTF-8 characters. */
static int
SilverExcerpt(const JsonValue *v)
{
	return pg_mbcliplen(v->start, v->end - v->start, SILVER_EXCERPT);
}

/* Compare two numerics. */
static int
SilverNumericCmp(Datum a, Datum b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, a, b));
}

/*
 * Numeric constants of the checks, made once per backend (the threshold again
 * when clickstream.high_value_threshold changes) instead of once per row.
 */
static struct
{
	Datum		zero;
	Datum		max_price;
	Datum		threshold;
	double		threshold_of;
}			silver_constants;

/* The numeric constants, current with the settings. */
static void
SilverConstants(void)
{
	MemoryContext old;

	if (silver_constants.zero != (Datum) 0 &&
		silver_constants.threshold_of == cs_high_value_threshold)
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	if (silver_constants.zero == (Datum) 0)
	{
		silver_constants.zero = NumericGetDatum(int64_to_numeric(0));
		silver_constants.max_price =
			DirectFunctionCall3(numeric_in, CStringGetDatum(SILVER_MAX_PRICE),
								ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	}
	else
		pfree(DatumGetPointer(silver_constants.threshold));
	silver_constants.threshold = DirectFunctionCall1(float8_numeric,
													 Float8GetDatum(cs_high_value_threshold));
	silver_constants.threshold_of = cs_high_value_threshold;
	MemoryContextSwitchTo(old);
}

/* A numeric datum from a scanned number (digits and exponent are bounded). */
static Datum
SilverNumeric(const char *start, const char *end)
{
	char	   *num = pnstrdup(start, end - start);
	Datum		d = DirectFunctionCall3(numeric_in, CStringGetDatum(num),
										ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));

	pfree(num);
	return d;
}

/* A text datum of a scanned string value. */
static Datum
SilverText(const JsonValue *v, StringInfo scratch)
{
	if (!v->escaped)
		return PointerGetDatum(cstring_to_text_with_len(v->start + 1, v->end - v->start - 2));
	SilverUnescape(v, scratch);
	return PointerGetDatum(cstring_to_text_with_len(scratch->data, scratch->len));
}

/* Byte length of a string value once decoded. */
static int
SilverTextLength(const JsonValue *v, StringInfo scratch)
{
	if (!v->escaped)
		return v->end - v->start - 2;
	SilverUnescape(v, scratch);
	return scratch->len;
}

/*
 * Parse one payload into row.  Returns with either every event column set
 * (reason NULL) or reason and detail set.
 */
static void
SilverParse(const char *data, int len, SilverRow *row)
{
	JsonScan	scan = {data, data + len, NULL, NULL};
	JsonValue	fields[NUM_FIELDS];
	JsonValue	key,
				value;
	TimestampTz ts;
	Datum		price = (Datum) 0;
	int32		quantity = 0;
	bool		has_price,
				has_quantity,
				first_attr = true;
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;
	bool		purchase;

	for (int f = 0; f < NUM_FIELDS; f++)
		fields[f].kind = JV_NONE;
	resetStringInfo(&row->attrs);

	if (len > SILVER_MAX_PAYLOAD)
	{
		SilverReject(row, "payload_too_large", "payload of %d bytes is larger than %d bytes",
					 len, SILVER_MAX_PAYLOAD);
		return;
	}
	if (!pg_verify_mbstr(PG_UTF8, data, len, true))
	{
		SilverReject(row, "invalid_utf8", "payload is not valid UTF-8");
		return;
	}

	/* the document: one object, its members, nothing after it */
	SilverSkipSpace(&scan);
	if (scan.p >= scan.end)
	{
		SilverReject(row, "invalid_json", "empty payload");
		return;
	}
	if (*scan.p != '{')
	{
		if (SilverScanValue(&scan, &value, 0))
		{
			SilverSkipSpace(&scan);
			if (scan.p == scan.end)
			{
				SilverReject(row, "not_an_object", "payload is %s, not a JSON object",
							 json_kind_names[value.kind]);
				return;
			}
			SilverScanFail(&scan, "invalid_json", "unexpected data after the JSON value");
		}
		SilverReject(row, scan.reason, "%s at byte %d", scan.error, (int) (scan.p - data));
		return;
	}
	scan.p++;
	SilverSkipSpace(&scan);
	if (scan.p < scan.end && *scan.p == '}')
		scan.p++;
	else
	{
		for (;;)
		{
			int			f;

			if (scan.p >= scan.end || *scan.p != '"')
			{
				SilverScanFail(&scan, "invalid_json", scan.p >= scan.end ? "unexpected end of input" : "expected a key");
				break;
			}
			if (!SilverScanString(&scan, &key))
				break;
			SilverSkipSpace(&scan);
			if (scan.p >= scan.end || *scan.p != ':')
			{
				SilverScanFail(&scan, "invalid_json", "expected ':'");
				break;
			}
			scan.p++;
			SilverSkipSpace(&scan);
			if (!SilverScanValue(&scan, &value, 1))
				break;
			f = SilverLookupKey(&key, &row->scratch);
			if (f >= 0)
				fields[f] = value;	/* the last one wins, as in jsonb */
			else
			{
				appendStringInfoChar(&row->attrs, first_attr ? '{' : ',');
				appendBinaryStringInfo(&row->attrs, key.start, key.end - key.start);
				appendStringInfoChar(&row->attrs, ':');
				appendBinaryStringInfo(&row->attrs, value.start, value.end - value.start);
				first_attr = false;
			}
			SilverSkipSpace(&scan);
			if (scan.p < scan.end && *scan.p == ',')
			{
				scan.p++;
				SilverSkipSpace(&scan);
				continue;
			}
			if (scan.p < scan.end && *scan.p == '}')
			{
				scan.p++;
				break;
			}
			SilverScanFail(&scan, "invalid_json", scan.p >= scan.end ? "unexpected end of input" : "expected ',' or '}'");
			break;
		}
	}
	if (scan.error == NULL)
	{
		SilverSkipSpace(&scan);
		if (scan.p != scan.end)
			SilverScanFail(&scan, "invalid_json", "unexpected data after the JSON object");
	}
	if (scan.error != NULL)
	{
		SilverReject(row, scan.reason, "%s at byte %d", scan.error, (int) (scan.p - data));
		return;
	}

	/* required fields: present, not null, not empty */
	for (int f = 0; f < NUM_FIELDS; f++)
	{
		if (!silver_fields[f].required)
			continue;
		if (fields[f].kind == JV_NONE || fields[f].kind == JV_NULL)
		{
			SilverReject(row, "missing_field", "required field \"%s\" is missing", silver_fields[f].name);
			return;
		}
		if (fields[f].kind == JV_STRING && fields[f].end - fields[f].start == 2)
		{
			SilverReject(row, "missing_field", "required field \"%s\" is empty", silver_fields[f].name);
			return;
		}
	}

	/* types; null counts as absent for optional fields */
	for (int f = 0; f < NUM_FIELDS; f++)
	{
		JsonKind	kind = fields[f].kind;
		const char *expected = NULL;

		if (kind == JV_NONE || kind == JV_NULL)
		{
			fields[f].kind = JV_NONE;
			continue;
		}
		if (f == F_TS)
		{
			if (kind != JV_STRING && kind != JV_NUMBER)
				expected = "a string (ISO-8601) or a number (epoch milliseconds)";
		}
		else if (f == F_PRICE)
		{
			if (kind != JV_NUMBER)
				expected = "a number";
		}
		else if (f == F_QUANTITY)
		{
			if (kind != JV_NUMBER)
				expected = "an integer";
		}
		else if (kind != JV_STRING)
			expected = "a string";
		if (expected)
		{
			SilverReject(row, "wrong_type", "field \"%s\" must be %s, not %s",
						 silver_fields[f].name, expected, json_kind_names[kind]);
			return;
		}
		if (silver_fields[f].identifier &&
			SilverTextLength(&fields[f], &row->scratch) > SILVER_MAX_ID_BYTES)
		{
			SilverReject(row, "value_too_long", "field \"%s\" is longer than %d bytes",
						 silver_fields[f].name, SILVER_MAX_ID_BYTES);
			return;
		}
	}

	/* values */
	has_price = fields[F_PRICE].kind == JV_NUMBER;
	has_quantity = fields[F_QUANTITY].kind == JV_NUMBER;
	if (has_price)
	{
		JsonValue  *v = &fields[F_PRICE];

		SilverConstants();
		price = SilverNumeric(v->start, v->end);
		if (SilverNumericCmp(price, silver_constants.zero) < 0)
		{
			SilverReject(row, "negative_price", "price %.*s is negative",
						 SilverExcerpt(v), v->start);
			return;
		}
		if (SilverNumericCmp(price, silver_constants.max_price) > 0)
		{
			SilverReject(row, "number_out_of_range", "price %.*s is above %s",
						 SilverExcerpt(v), v->start, SILVER_MAX_PRICE);
			return;
		}
	}
	if (has_quantity)
	{
		JsonValue  *v = &fields[F_QUANTITY];
		char	   *num = pnstrdup(v->start, v->end - v->start);
		double		q = strtod(num, NULL);
		const char *dot = strchr(num, '.');
		bool		integral = v->integral;

		/* 2.0 and 2.00 are integers; 1.0000000000000000001 is not */
		if (!integral && dot != NULL && strpbrk(num, "eE") == NULL)
			integral = strspn(dot + 1, "0") == strlen(dot + 1);
		else if (!integral)
			integral = q == floor(q) && fabs(q) < 1e15;
		pfree(num);
		if (!integral)
		{
			SilverReject(row, "wrong_type", "field \"quantity\" must be an integer, not %.*s",
						 SilverExcerpt(v), v->start);
			return;
		}
		if (q < 1 || q > PG_INT32_MAX)
		{
			SilverReject(row, "invalid_quantity", "quantity %.*s is not between 1 and %d",
						 SilverExcerpt(v), v->start, PG_INT32_MAX);
			return;
		}
		quantity = (int32) q;
	}

	/* the timestamp */
	if (!SilverParseTs(&fields[F_TS], &row->scratch, &ts))
	{
		SilverReject(row, "invalid_timestamp",
					 "ts %.*s is neither ISO-8601 with a time zone nor epoch milliseconds (years 1 to 9999)",
					 SilverExcerpt(&fields[F_TS]), fields[F_TS].start);
		return;
	}
	if (ts > GetCurrentTransactionStartTimestamp() + (int64) cs_max_clock_skew * USECS_PER_SEC)
	{
		SilverReject(row, "timestamp_in_future",
					 "ts %s is more than clickstream.max_clock_skew (%d s) ahead of the server clock",
					 timestamptz_to_str(ts), cs_max_clock_skew);
		return;
	}

	purchase = SilverKeyIs(&fields[F_EVENT_TYPE], "purchase", 8, &row->scratch);
	if (purchase && fields[F_ORDER_ID].kind != JV_STRING)
	{
		SilverReject(row, "purchase_without_order", "a purchase must carry an order_id");
		return;
	}
	if (purchase && fields[F_ORDER_ID].end - fields[F_ORDER_ID].start == 2)
	{
		SilverReject(row, "purchase_without_order", "a purchase must carry a non-empty order_id");
		return;
	}

	/* accepted: build the row */
	for (int i = 0; i < SILVER_NUM_COLS; i++)
		row->nulls[i] = true;
	for (int f = 0; f < NUM_FIELDS; f++)
	{
		int			col = silver_fields[f].column;

		if (col >= 0 && fields[f].kind == JV_STRING)
		{
			row->values[col] = SilverText(&fields[f], &row->scratch);
			row->nulls[col] = false;
		}
	}
	row->values[SILVER_COL_TS] = TimestampTzGetDatum(ts);
	row->nulls[SILVER_COL_TS] = false;
	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0 || tm.tm_year < 1 || tm.tm_year > 9999 ||
		timestamp2tm(ts, &tzoff, &tm, &fsec, NULL, SilverTimezone()) != 0 ||
		tm.tm_year < 1 || tm.tm_year > 9999)
	{
		SilverReject(row, "invalid_timestamp",
					 "ts %s is outside years 1 to 9999 (in UTC or in clickstream.timezone)",
					 timestamptz_to_str(ts));
		return;
	}
	row->values[SILVER_COL_EVENT_DATE] = DateADTGetDatum(date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - POSTGRES_EPOCH_JDATE);
	row->values[SILVER_COL_EVENT_HOUR] = Int16GetDatum((int16) tm.tm_hour);
	row->nulls[SILVER_COL_EVENT_DATE] = row->nulls[SILVER_COL_EVENT_HOUR] = false;

	if (has_price)
	{
		row->values[SILVER_COL_PRICE] = price;
		row->nulls[SILVER_COL_PRICE] = false;
	}
	if (has_quantity)
	{
		row->values[SILVER_COL_QUANTITY] = Int32GetDatum(quantity);
		row->nulls[SILVER_COL_QUANTITY] = false;
	}
	SilverConstants();
	row->values[SILVER_COL_IS_HIGH_VALUE] =
		BoolGetDatum(has_price && SilverNumericCmp(price, silver_constants.threshold) > 0);
	row->nulls[SILVER_COL_IS_HIGH_VALUE] = false;

	/* revenue: price x quantity (1 when absent) for purchases, 0 otherwise */
	if (!purchase)
	{
		row->values[SILVER_COL_REVENUE] = silver_constants.zero;
		row->nulls[SILVER_COL_REVENUE] = false;
	}
	else if (has_price)
	{
		row->values[SILVER_COL_REVENUE] =
			DirectFunctionCall2(numeric_mul, row->values[SILVER_COL_PRICE],
								NumericGetDatum(int64_to_numeric(has_quantity ? quantity : 1)));
		row->nulls[SILVER_COL_REVENUE] = false;
	}

	if (!first_attr)
	{
		appendStringInfoChar(&row->attrs, '}');
		row->values[SILVER_COL_ATTRS] = DirectFunctionCall1(jsonb_in, CStringGetDatum(row->attrs.data));
		row->nulls[SILVER_COL_ATTRS] = false;
	}
}

/* Refuse to parse unless the database is UTF8 (the JSON text is UTF-8). */
void
SilverCheckDatabase(void)
{
	if (GetDatabaseEncoding() != PG_UTF8)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("clickstream silver needs a UTF8 database, this one is %s",
						GetDatabaseEncodingName()),
				 errhint("Create the database with ENCODING 'UTF8' (events are JSON, which is UTF-8).")));
}

/*
 * The backend's parse buffers; shrunk again once a huge payload has grown
 * them beyond 1 MB.
 */
SilverRow *
SilverRowGet(void)
{
	static SilverRow *row = NULL;

	if (row == NULL || row->scratch.maxlen > 1024 * 1024 || row->attrs.maxlen > 1024 * 1024)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		if (row == NULL)
			row = palloc0(sizeof(SilverRow));
		else
		{
			pfree(row->scratch.data);
			pfree(row->attrs.data);
		}
		initStringInfo(&row->scratch);
		initStringInfo(&row->attrs);
		MemoryContextSwitchTo(old);
	}
	return row;
}

/* Parse one message's payload into row; data NULL is a tombstone. */
void
SilverParseMessage(SilverRow *row, const char *data, int len)
{
	if (data == NULL)
		SilverReject(row, "empty_payload", "the message has no payload (a tombstone)");
	else
		SilverParse(data, len, row);
}

/*
 * clickstream.parse_event(payload bytea) RETURNS clickstream.parsed_event
 *
 * Parse and validate one event; never raises an error for bad data.
 */
Datum
clickstream_parse_event(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc = (TupleDesc) fcinfo->flinfo->fn_extra;
	SilverRow  *row;

	if (tupdesc == NULL)
	{
		MemoryContext old;

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("clickstream.parse_event must return a composite type")));
		if (tupdesc->natts != SILVER_NUM_COLS)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("clickstream.parsed_event has %d columns, the library expects %d",
							tupdesc->natts, SILVER_NUM_COLS),
					 errhint("Update the extension: ALTER EXTENSION clickstream UPDATE.")));
		SilverCheckDatabase();
		old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
		tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		MemoryContextSwitchTo(old);
		fcinfo->flinfo->fn_extra = tupdesc;
	}

	row = SilverRowGet();
	if (PG_ARGISNULL(0))
		SilverParseMessage(row, NULL, 0);
	else
	{
		bytea	   *payload = PG_GETARG_BYTEA_PP(0);

		SilverParseMessage(row, VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload));
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, row->values, row->nulls)));
}
