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
 * message can never stop a refresh.  A parse has three stages: scan (the
 * strict JSON scanner of json.c validates the whole document, keeps the
 * known fields as spans of the payload and copies the unknown members out
 * for attrs), validate (presence, types, values, the timestamp and its day)
 * and build (the row's datums).
 *
 * The event format is defined once, in docs/events.md ("Event format").
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

#include "json.h"

PG_FUNCTION_INFO_V1(clickstream_parse_event);

/* Longest identifier-like string value accepted (indexes hold these). */
#define SILVER_MAX_ID_BYTES 512
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

/* What the validation of an event derives, for the build. */
typedef struct SilverValues
{
	TimestampTz ts;
	DateADT		event_date;		/* in clickstream.timezone */
	int16		event_hour;
	bool		purchase;
	bool		has_price;
	bool		has_quantity;
	Datum		price;
	int32		quantity;
} SilverValues;

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

		if (JsonStringIs(key, silver_fields[f].name, silver_fields[f].namelen, scratch))
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
		JsonUnescape(v, scratch);
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
	JsonUnescape(v, scratch);
	return PointerGetDatum(cstring_to_text_with_len(scratch->data, scratch->len));
}

/* Byte length of a string value once decoded. */
static int
SilverTextLength(const JsonValue *v, StringInfo scratch)
{
	if (!v->escaped)
		return v->end - v->start - 2;
	JsonUnescape(v, scratch);
	return scratch->len;
}

/* Record a member of the event object: a known field, or one for attrs. */
static void
SilverMember(SilverRow *row, JsonValue *fields, const JsonValue *key,
			 const JsonValue *value)
{
	int			f = SilverLookupKey(key, &row->scratch);

	if (f >= 0)
		fields[f] = *value;		/* the last one wins, as in jsonb */
	else
	{
		appendStringInfoChar(&row->attrs, row->attrs.len == 0 ? '{' : ',');
		appendBinaryStringInfo(&row->attrs, key->start, key->end - key->start);
		appendStringInfoChar(&row->attrs, ':');
		appendBinaryStringInfo(&row->attrs, value->start, value->end - value->start);
	}
}

/*
 * Scan: check that the payload is one JSON object, and keep its members:
 * the known fields in fields[] (JV_NONE when absent), the others in
 * row->attrs as object text without its closing brace (empty when none).
 * Returns false when it rejected the payload.
 */
static bool
SilverScan(const char *data, int len, SilverRow *row, JsonValue *fields)
{
	JsonScan	scan;
	JsonValue	key,
				value;

	for (int f = 0; f < NUM_FIELDS; f++)
		fields[f].kind = JV_NONE;
	resetStringInfo(&row->attrs);

	if (len > SILVER_MAX_PAYLOAD)
	{
		SilverReject(row, "payload_too_large", "payload of %d bytes is larger than %d bytes",
					 len, SILVER_MAX_PAYLOAD);
		return false;
	}
	if (!pg_verify_mbstr(PG_UTF8, data, len, true))
	{
		SilverReject(row, "invalid_utf8", "payload is not valid UTF-8");
		return false;
	}

	/* the document: one object, its members, nothing after it */
	JsonScanStart(&scan, data, len);
	JsonSkipSpace(&scan);
	if (scan.p >= scan.end)
	{
		SilverReject(row, "invalid_json", "empty payload");
		return false;
	}
	if (*scan.p != '{')
	{
		if (JsonScanValue(&scan, &value, 0))
		{
			JsonSkipSpace(&scan);
			if (scan.p == scan.end)
			{
				SilverReject(row, "not_an_object", "payload is %s, not a JSON object",
							 JsonKindName(value.kind));
				return false;
			}
			JsonScanFail(&scan, "invalid_json", "unexpected data after the JSON value");
		}
	}
	else
	{
		JsonObjectBegin(&scan);
		while (JsonObjectNext(&scan, &key, &value))
			SilverMember(row, fields, &key, &value);
		if (scan.error == NULL)
		{
			JsonSkipSpace(&scan);
			if (scan.p != scan.end)
				JsonScanFail(&scan, "invalid_json", "unexpected data after the JSON object");
		}
	}
	if (scan.error != NULL)
	{
		SilverReject(row, scan.reason, "%s at byte %d", scan.error, (int) (scan.p - data));
		return false;
	}
	return true;
}

/*
 * Validate the fields' presence, types and lengths: required fields present,
 * not null, not empty; each field of its type.  A null optional field is
 * marked absent.  Returns false when it rejected the payload.
 */
static bool
SilverCheckFields(JsonValue *fields, SilverRow *row)
{
	for (int f = 0; f < NUM_FIELDS; f++)
	{
		if (!silver_fields[f].required)
			continue;
		if (fields[f].kind == JV_NONE || fields[f].kind == JV_NULL)
		{
			SilverReject(row, "missing_field", "required field \"%s\" is missing", silver_fields[f].name);
			return false;
		}
		if (fields[f].kind == JV_STRING && fields[f].end - fields[f].start == 2)
		{
			SilverReject(row, "missing_field", "required field \"%s\" is empty", silver_fields[f].name);
			return false;
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
						 silver_fields[f].name, expected, JsonKindName(kind));
			return false;
		}
		if (silver_fields[f].identifier &&
			SilverTextLength(&fields[f], &row->scratch) > SILVER_MAX_ID_BYTES)
		{
			SilverReject(row, "value_too_long", "field \"%s\" is longer than %d bytes",
						 silver_fields[f].name, SILVER_MAX_ID_BYTES);
			return false;
		}
	}
	return true;
}

/*
 * Validate the values of checked fields and derive what the row needs:
 * price and quantity in range, the timestamp (not too far ahead, its day
 * and hour in clickstream.timezone within years 1 to 9999), an order id for
 * a purchase.  Returns false when it rejected the payload.
 */
static bool
SilverCheckValues(const JsonValue *fields, SilverRow *row, SilverValues *values)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;

	values->has_price = fields[F_PRICE].kind == JV_NUMBER;
	values->has_quantity = fields[F_QUANTITY].kind == JV_NUMBER;
	values->price = (Datum) 0;
	values->quantity = 0;
	if (values->has_price)
	{
		const JsonValue *v = &fields[F_PRICE];

		SilverConstants();
		values->price = SilverNumeric(v->start, v->end);
		if (SilverNumericCmp(values->price, silver_constants.zero) < 0)
		{
			SilverReject(row, "negative_price", "price %.*s is negative",
						 SilverExcerpt(v), v->start);
			return false;
		}
		if (SilverNumericCmp(values->price, silver_constants.max_price) > 0)
		{
			SilverReject(row, "number_out_of_range", "price %.*s is above %s",
						 SilverExcerpt(v), v->start, SILVER_MAX_PRICE);
			return false;
		}
	}
	if (values->has_quantity)
	{
		const JsonValue *v = &fields[F_QUANTITY];
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
			return false;
		}
		if (q < 1 || q > PG_INT32_MAX)
		{
			SilverReject(row, "invalid_quantity", "quantity %.*s is not between 1 and %d",
						 SilverExcerpt(v), v->start, PG_INT32_MAX);
			return false;
		}
		values->quantity = (int32) q;
	}

	/* the timestamp */
	if (!SilverParseTs(&fields[F_TS], &row->scratch, &values->ts))
	{
		SilverReject(row, "invalid_timestamp",
					 "ts %.*s is neither ISO-8601 with a time zone nor epoch milliseconds (years 1 to 9999)",
					 SilverExcerpt(&fields[F_TS]), fields[F_TS].start);
		return false;
	}
	if (values->ts > GetCurrentTransactionStartTimestamp() + (int64) cs_max_clock_skew * USECS_PER_SEC)
	{
		SilverReject(row, "timestamp_in_future",
					 "ts %s is more than clickstream.max_clock_skew (%d s) ahead of the server clock",
					 timestamptz_to_str(values->ts), cs_max_clock_skew);
		return false;
	}

	values->purchase = JsonStringIs(&fields[F_EVENT_TYPE], "purchase", 8, &row->scratch);
	if (values->purchase && fields[F_ORDER_ID].kind != JV_STRING)
	{
		SilverReject(row, "purchase_without_order", "a purchase must carry an order_id");
		return false;
	}
	if (values->purchase && fields[F_ORDER_ID].end - fields[F_ORDER_ID].start == 2)
	{
		SilverReject(row, "purchase_without_order", "a purchase must carry a non-empty order_id");
		return false;
	}

	/* its day and hour */
	if (timestamp2tm(values->ts, NULL, &tm, &fsec, NULL, NULL) != 0 ||
		tm.tm_year < 1 || tm.tm_year > 9999 ||
		timestamp2tm(values->ts, &tzoff, &tm, &fsec, NULL, SilverTimezone()) != 0 ||
		tm.tm_year < 1 || tm.tm_year > 9999)
	{
		SilverReject(row, "invalid_timestamp",
					 "ts %s is outside years 1 to 9999 (in UTC or in clickstream.timezone)",
					 timestamptz_to_str(values->ts));
		return false;
	}
	values->event_date = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - POSTGRES_EPOCH_JDATE;
	values->event_hour = (int16) tm.tm_hour;
	return true;
}

/* Build: fill every event column of row (reason NULL) from a valid event. */
static void
SilverBuild(const JsonValue *fields, const SilverValues *values, SilverRow *row)
{
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
	row->values[SILVER_COL_TS] = TimestampTzGetDatum(values->ts);
	row->nulls[SILVER_COL_TS] = false;
	row->values[SILVER_COL_EVENT_DATE] = DateADTGetDatum(values->event_date);
	row->values[SILVER_COL_EVENT_HOUR] = Int16GetDatum(values->event_hour);
	row->nulls[SILVER_COL_EVENT_DATE] = row->nulls[SILVER_COL_EVENT_HOUR] = false;

	if (values->has_price)
	{
		row->values[SILVER_COL_PRICE] = values->price;
		row->nulls[SILVER_COL_PRICE] = false;
	}
	if (values->has_quantity)
	{
		row->values[SILVER_COL_QUANTITY] = Int32GetDatum(values->quantity);
		row->nulls[SILVER_COL_QUANTITY] = false;
	}
	SilverConstants();
	row->values[SILVER_COL_IS_HIGH_VALUE] =
		BoolGetDatum(values->has_price &&
					 SilverNumericCmp(values->price, silver_constants.threshold) > 0);
	row->nulls[SILVER_COL_IS_HIGH_VALUE] = false;

	/* revenue: price x quantity (1 when absent) for purchases, 0 otherwise */
	if (!values->purchase)
	{
		row->values[SILVER_COL_REVENUE] = silver_constants.zero;
		row->nulls[SILVER_COL_REVENUE] = false;
	}
	else if (values->has_price)
	{
		row->values[SILVER_COL_REVENUE] =
			DirectFunctionCall2(numeric_mul, values->price,
								NumericGetDatum(int64_to_numeric(values->has_quantity ?
																 values->quantity : 1)));
		row->nulls[SILVER_COL_REVENUE] = false;
	}

	if (row->attrs.len > 0)
	{
		appendStringInfoChar(&row->attrs, '}');
		row->values[SILVER_COL_ATTRS] = DirectFunctionCall1(jsonb_in, CStringGetDatum(row->attrs.data));
		row->nulls[SILVER_COL_ATTRS] = false;
	}
}

/*
 * Parse one payload into row: scan, validate, build.  Returns with either
 * every event column set (reason NULL) or reason and detail set.
 */
static void
SilverParse(const char *data, int len, SilverRow *row)
{
	JsonValue	fields[NUM_FIELDS];
	SilverValues values;

	if (SilverScan(data, len, row, fields) &&
		SilverCheckFields(fields, row) &&
		SilverCheckValues(fields, row, &values))
		SilverBuild(fields, &values, row);
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
