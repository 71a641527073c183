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
 * and build (the row's datums, and a derived event_id).
 *
 * What producers may send besides the canonical format is configured by
 * settings: other names of fields and event types (aliases.c builds their
 * maps once per setting change: a key costs one hash lookup), a timestamp's
 * zone and epoch unit, the fields an event_id is derived from, whether a
 * purchase needs an order_id.  Numbers are read exactly, never through a
 * double.
 *
 * The event format is defined once, in docs/events.md ("Event format").
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "json.h"
#include "silver.h"

PG_FUNCTION_INFO_V1(clickstream_parse_event);

/* Prices above this are refused as number_out_of_range. */
#define SILVER_MAX_PRICE "1000000000000000"
/* Larger payloads are refused (jsonb and palloc have limits of their own). */
#define SILVER_MAX_PAYLOAD (16 * 1024 * 1024)
/* Longest excerpt of a value quoted in a detail message, in bytes. */
#define SILVER_EXCERPT 80
/* Bytes of SHA-256 kept in a derived event_id (written as twice as many hex digits). */
#define SILVER_ID_HASH_BYTES 16
/* In a derived id's input, a field that is absent (never valid UTF-8). */
#define SILVER_ID_ABSENT '\xff'
/*
 * Epoch times accepted, in microseconds since 1970-01-01 UTC: 1e14 to 1e17
 * (1e11 to 1e14 ms, 1e8 to 1e11 s), 1973-03-03 09:46:40 to 5138-11-16
 * 09:46:40 UTC.  Its ends are 1000 times apart, as the units are: a number
 * sent in another unit than clickstream.epoch_unit falls outside.
 */
#define SILVER_EPOCH_MIN_US INT64CONST(100000000000000)
#define SILVER_EPOCH_MAX_US INT64CONST(100000000000000000)

#define SILVER_KEY(name) name, sizeof(name) - 1

/* The fields of the event format (silver.h), and the column each one fills. */
const SilverFieldDef silver_fields[NUM_FIELDS] = {
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

/*
 * The known fields of one payload: each one's value and key as scanned, the
 * rank of the name it came under (0: the canonical name, then the aliases in
 * the order of clickstream.field_aliases), and the path alias it was found
 * through in a nested object (NULL: a member of the event object).
 */
typedef struct SilverEvent
{
	JsonValue	fields[NUM_FIELDS];
	JsonValue	keys[NUM_FIELDS];
	int			ranks[NUM_FIELDS];
	const char *paths[NUM_FIELDS];
} SilverEvent;

/* What the validation of an event derives, for the build. */
typedef struct SilverValues
{
	TimestampTz ts;
	DateADT		event_date;		/* in clickstream.timezone */
	int16		event_hour;
	bool		purchase;
	bool		has_price;
	bool		has_quantity;
	bool		derive_id;		/* no event_id: derive it */
	Datum		price;
	int32		quantity;
	const char *event_type;		/* the canonical type of an alias, or NULL */
	int			event_type_len;
} SilverValues;

/* Outcome of reading a timestamp. */
typedef enum SilverTs
{
	SILVER_TS_OK,
	SILVER_TS_INVALID,
	SILVER_TS_NO_ZONE,			/* valid, but without a zone, and refused */
	SILVER_TS_EPOCH_RANGE		/* an epoch number outside the accepted times */
} SilverTs;

static pg_tz *SilverTimezone(void);

/* The map of field names in force (the canonical names at least). */
static const SilverMap *
SilverFieldMap(void)
{
	if (silver_field_map == NULL)
	{
		void	   *extra = NULL;

		/* only before clickstream.field_aliases is defined: never in practice */
		if (!AliasesCheckFields("", &extra))
			elog(ERROR, "could not build the map of the event format's fields");
		AliasesAssignFields(extra);
	}
	return silver_field_map;
}

/*
 * Producers send their keys in the same order every time: for each name of
 * the field map (and for the start of an object, and for after a key of no
 * field, two more slots), the entry of the key that followed it last time
 * is tried first, before the hash.
 */
static struct
{
	const SilverMap *map;		/* the map the guesses are about */
	uint32		generation;		/* silver_field_map_generation it had */
	int			prev;			/* slot of the previous key */
	int16		next[NUM_FIELDS + SILVER_MAX_NAMES + SILVER_MAX_PREFIXES + 2];	/* entry, or -1 */
}			silver_guess;

/* Start guessing the keys of a new object. */
static void
SilverLookupStart(void)
{
	const SilverMap *map = SilverFieldMap();

	if (silver_guess.map != map || silver_guess.generation != silver_field_map_generation)
	{
		silver_guess.map = map;
		silver_guess.generation = silver_field_map_generation;
		memset(silver_guess.next, -1, sizeof(silver_guess.next));
	}
	silver_guess.prev = map->nentries;
}

/* Which field a key names (and under which name), or NULL. */
static const SilverMapEntry *
SilverLookupKey(const JsonValue *key, StringInfo scratch)
{
	const SilverMap *map = silver_guess.map;
	const SilverMapEntry *entry;
	const char *name = key->start + 1;
	int			len = key->end - key->start - 2;
	int			guess = silver_guess.next[silver_guess.prev];

	if (key->escaped)
	{
		JsonUnescape(key, scratch);
		name = scratch->data;
		len = scratch->len;
	}
	if (guess >= 0 && guess < map->nentries && map->entries[guess].len == len &&
		memcmp(map->entries[guess].name, name, len) == 0)
		entry = &map->entries[guess];
	else
	{
		entry = SilverMapFind(map, name, len);
		silver_guess.next[silver_guess.prev] = entry ? entry - map->entries : -1;
	}
	silver_guess.prev = entry ? entry - map->entries : map->nentries + 1;
	return entry;
}

/*
 * The bytes of a text field's value: a string's (decoded in scratch when it
 * has escapes) or an integer's decimal digits (-0 is 0).
 */
static inline void
SilverValueBytes(const JsonValue *v, StringInfo scratch, const char **p, int *len)
{
	if (v->kind == JV_NUMBER)
	{
		*p = v->start;
		*len = v->end - v->start;
		if (*len == 2 && v->start[0] == '-' && v->start[1] == '0')
			(*p)++, (*len)--;
	}
	else if (!v->escaped)
	{
		*p = v->start + 1;
		*len = v->end - v->start - 2;
	}
	else
	{
		JsonUnescape(v, scratch);
		*p = scratch->data;
		*len = scratch->len;
	}
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
 * Parse an ISO-8601 timestamp:
 * YYYY-MM-DD(T|t| )HH:MM[:SS[(.|,)fraction]][ ](Z|z|UTC|GMT|(+|-)HH[[:]MM]),
 * or without a zone, read as clickstream.timestamp_without_zone says.
 * Fractions beyond microseconds are truncated.
 */
static SilverTs
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
		return SILVER_TS_INVALID;
	p++;
	if ((tm.tm_hour = SilverDigits(&p, end, 2)) < 0 || tm.tm_hour > 23 || p >= end || *p++ != ':' ||
		(tm.tm_min = SilverDigits(&p, end, 2)) < 0 || tm.tm_min > 59)
		return SILVER_TS_INVALID;
	if (p < end && *p == ':')
	{
		p++;
		if ((tm.tm_sec = SilverDigits(&p, end, 2)) < 0 || tm.tm_sec > 59)
			return SILVER_TS_INVALID;
		if (p < end && (*p == '.' || *p == ','))
		{
			int			scale = 100000;

			p++;
			if (p >= end || !isdigit((unsigned char) *p))
				return SILVER_TS_INVALID;
			while (p < end && isdigit((unsigned char) *p))
			{
				fsec += (*p - '0') * scale;
				scale /= 10;
				p++;
			}
		}
	}

	/* one space may come before the zone */
	if (end - p >= 2 && *p == ' ')
		p++;
	if (p >= end)
	{
		/* no zone */
		if (cs_timestamp_without_zone == TS_WITHOUT_ZONE_REJECT)
			return SILVER_TS_NO_ZONE;
		if (cs_timestamp_without_zone == TS_WITHOUT_ZONE_LOCAL)
			tz = DetermineTimeZoneOffset(&tm, SilverTimezone());
	}
	else if (*p == 'Z' || *p == 'z')
		p++;
	else if (end - p >= 3 && (memcmp(p, "UTC", 3) == 0 || memcmp(p, "GMT", 3) == 0))
		p += 3;
	else if (*p == '+' || *p == '-')
	{
		int			sign = *p++ == '+' ? 1 : -1;
		int			hh = SilverDigits(&p, end, 2);
		int			mm = 0;

		if (hh < 0 || hh > 18)
			return SILVER_TS_INVALID;
		if (p < end && *p == ':')
		{
			p++;
			if ((mm = SilverDigits(&p, end, 2)) < 0)
				return SILVER_TS_INVALID;
		}
		else if (p < end && (mm = SilverDigits(&p, end, 2)) < 0)
			return SILVER_TS_INVALID;
		if (mm > 59)
			return SILVER_TS_INVALID;
		tz = -sign * (hh * SECS_PER_HOUR + mm * SECS_PER_MINUTE);
	}
	else
		return SILVER_TS_INVALID;
	if (p != end)
		return SILVER_TS_INVALID;
	return tm2timestamp(&tm, fsec, &tz, result) == 0 ? SILVER_TS_OK : SILVER_TS_INVALID;
}

/*
 * Read the decimal number at [p, end), -?digits[.digits][(e|E)[+|-]digits],
 * exactly: its value times 10^scale, truncated toward zero, as a magnitude
 * (*result) and a sign (*negative); *exact says that nothing was truncated.
 * Returns false when the text is not such a number or the magnitude is above
 * limit (then *too_large is true).  Never goes through a double.
 */
static bool
SilverDecimal(const char *p, const char *end, int scale, int64 limit,
			  int64 *result, bool *negative, bool *exact, bool *too_large)
{
	const char *ip;
	const char *fp = NULL;
	int			nint;
	int			nfrac = 0;
	int64		exponent = 0;
	int64		shift;
	int64		kept;
	int64		acc = 0;

	*negative = false;
	*exact = true;
	*too_large = false;
	if (p < end && *p == '-')
		*negative = true, p++;
	ip = p;
	while (p < end && isdigit((unsigned char) *p))
		p++;
	nint = p - ip;
	if (nint == 0)
		return false;
	if (p < end && *p == '.')
	{
		fp = ++p;
		while (p < end && isdigit((unsigned char) *p))
			p++;
		nfrac = p - fp;
		if (nfrac == 0)
			return false;
	}
	if (p < end && (*p == 'e' || *p == 'E'))
	{
		bool		minus = false;

		p++;
		if (p < end && (*p == '+' || *p == '-'))
			minus = *p++ == '-';
		if (p >= end || !isdigit((unsigned char) *p))
			return false;
		for (; p < end && isdigit((unsigned char) *p); p++)
			if (exponent < 1000000)
				exponent = exponent * 10 + (*p - '0');
		if (minus)
			exponent = -exponent;
	}
	if (p != end)
		return false;

	/* value = (the digits as an integer) * 10^shift */
	shift = exponent + scale - nfrac;
	/* the leading digits that stay units or above */
	kept = nint + nfrac + shift;
	for (int i = 0; i < nint + nfrac; i++)
	{
		int			d = (i < nint ? ip[i] : fp[i - nint]) - '0';

		if (i < kept)
		{
			if (acc > (limit - d) / 10)
				return !(*too_large = true);
			acc = acc * 10 + d;
		}
		else if (d != 0)
			*exact = false;
	}
	for (int64 i = 0; i < shift && acc != 0; i++)
	{
		if (acc > limit / 10)
			return !(*too_large = true);
		acc *= 10;
	}
	*result = acc;
	return true;
}

/* Microseconds per unit of clickstream.epoch_unit, as a power of ten. */
static const int silver_epoch_scale[] = {[EPOCH_UNIT_MS] = 3,[EPOCH_UNIT_S] = 6,[EPOCH_UNIT_US] = 0};

/*
 * Read an epoch number (the text of a JSON number, or of a string holding
 * one) in unit as microseconds since 1970-01-01 UTC, exactly; fractions of a
 * microsecond are truncated toward zero.  Returns false when the text is no
 * number; *in_years is false when it is outside years 1..9999.
 */
static bool
SilverEpochMicros(const char *p, const char *end, int unit, int64 *us, bool *in_years)
{
	/* 0001-01-01 and 10000-01-01 in Unix epoch microseconds */
	const int64 lo = INT64CONST(62135596800000000);
	const int64 hi = INT64CONST(253402300800000000);
	bool		negative;
	bool		exact;
	bool		too_large;

	*in_years = false;
	if (!SilverDecimal(p, end, silver_epoch_scale[unit], hi, us, &negative, &exact, &too_large))
		return too_large;
	if (negative ? *us > lo : *us >= hi)
		return true;
	if (negative)
		*us = -*us;
	*in_years = true;
	return true;
}

/* A timestamp from microseconds since 1970-01-01 UTC. */
static inline TimestampTz
SilverFromUnixMicros(int64 us)
{
	return us - (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
}

/*
 * Turn an epoch number in clickstream.epoch_unit into a timestamp, when it
 * is within the accepted times (SILVER_EPOCH_MIN_US to SILVER_EPOCH_MAX_US).
 */
static SilverTs
SilverEpoch(const char *p, const char *end, TimestampTz *result)
{
	int64		us;
	bool		in_years;

	if (!SilverEpochMicros(p, end, cs_epoch_unit, &us, &in_years))
		return SILVER_TS_INVALID;
	if (!in_years || us < SILVER_EPOCH_MIN_US || us >= SILVER_EPOCH_MAX_US)
		return SILVER_TS_EPOCH_RANGE;
	*result = SilverFromUnixMicros(us);
	return SILVER_TS_OK;
}

/* Read the ts value: an ISO-8601 string, or an epoch number (or string of one). */
static SilverTs
SilverParseTs(const JsonValue *v, StringInfo scratch, TimestampTz *result)
{
	const char *p;
	const char *end;

	if (v->kind != JV_STRING)
		return SilverEpoch(v->start, v->end, result);
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
	if (end > p && (isdigit((unsigned char) *p) || *p == '-'))
	{
		SilverTs	epoch = SilverEpoch(p, end, result);

		if (epoch != SILVER_TS_INVALID)
			return epoch;
	}
	return SilverParseIso(p, end, result);
}

/* The name of a clickstream.epoch_unit, for messages. */
static const char *
SilverEpochUnitName(int unit)
{
	switch (unit)
	{
		case EPOCH_UNIT_S:
			return "seconds";
		case EPOCH_UNIT_US:
			return "microseconds";
		default:
			return "milliseconds";
	}
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

/* A text datum of a text field's value (a string, or an integer's digits). */
static Datum
SilverText(const JsonValue *v, StringInfo scratch)
{
	const char *p;
	int			len;

	SilverValueBytes(v, scratch, &p, &len);
	return PointerGetDatum(cstring_to_text_with_len(p, len));
}

/* Byte length of a text field's value once decoded. */
static int
SilverTextLength(const JsonValue *v, StringInfo scratch)
{
	const char *p;
	int			len;

	SilverValueBytes(v, scratch, &p, &len);
	return len;
}

/* Keep a member in attrs (as object text without its closing brace). */
static void
SilverAttr(SilverRow *row, const JsonValue *key, const JsonValue *value)
{
	appendStringInfoChar(&row->attrs, row->attrs.len == 0 ? '{' : ',');
	appendBinaryStringInfo(&row->attrs, key->start, key->end - key->start);
	appendStringInfoChar(&row->attrs, ':');
	appendBinaryStringInfo(&row->attrs, value->start, value->end - value->start);
}

/* Is a value void for the ranking of names: null, or an empty string? */
static inline bool
SilverVoid(const JsonValue *v)
{
	return v->kind == JV_NULL || (v->kind == JV_STRING && v->end - v->start == 2);
}

/*
 * Record the value of a field, found under entry's name: a member of the
 * event object, or (path) a member of a nested object reached through a path
 * alias.  The same name twice: the last one wins, as in jsonb.  Two names of
 * one field: a value wins over null or an empty string, then the canonical
 * name over its aliases, then the alias listed first, then a member of the
 * event object over a path (a key "properties.price" over properties.price);
 * a losing member of the event object, unless null, is kept in attrs (a
 * nested one is there already, in its object).
 */
static void
SilverRecordField(SilverRow *row, SilverEvent *ev, const SilverMapEntry *entry,
				  const JsonValue *key, const JsonValue *value, bool path)
{
	int			f = entry->field;
	JsonValue  *held = &ev->fields[f];

	/* ranks and paths are set only with a value */
	if (held->kind != JV_NONE &&
		(entry->rank != ev->ranks[f] || path != (ev->paths[f] != NULL)))
	{
		bool		held_path = ev->paths[f] != NULL;
		bool		wins;

		if (SilverVoid(held) != SilverVoid(value))
			wins = SilverVoid(held);
		else if (entry->rank != ev->ranks[f])
			wins = entry->rank < ev->ranks[f];
		else
			wins = !path;
		if (!wins)
		{
			if (value->kind != JV_NULL && !path)
				SilverAttr(row, key, value);
			return;
		}
		if (held->kind != JV_NULL && !held_path)
			SilverAttr(row, &ev->keys[f], held);
	}
	*held = *value;
	ev->keys[f] = *key;
	ev->ranks[f] = entry->rank;
	ev->paths[f] = path ? entry->name : NULL;
}

/*
 * Forget the fields found through paths under prefix (its len bytes): the
 * object they were in is given again, and the last copy is the one read.
 */
static void
SilverForgetPaths(SilverEvent *ev, const char *prefix, int len)
{
	for (int f = 0; f < NUM_FIELDS; f++)
	{
		const char *p = ev->paths[f];

		if (ev->fields[f].kind != JV_NONE && p != NULL &&
			strncmp(p, prefix, len) == 0 && p[len] == '.')
		{
			ev->fields[f].kind = JV_NONE;
			ev->paths[f] = NULL;
		}
	}
}

/*
 * Look into a nested object reached by the path (its pathlen bytes in a
 * buffer of SILVER_MAX_ID_BYTES + 1) that some path alias starts with: record
 * its members that a path alias names, and look into those that other
 * paths go through.  The object was validated by the scan of the payload.
 */
static void
SilverNested(SilverRow *row, SilverEvent *ev, char *path, int pathlen,
			 const JsonValue *object)
{
	JsonScan	scan;
	JsonValue	key,
				value;

	JsonScanStart(&scan, object->start, object->end - object->start);
	JsonObjectBegin(&scan);
	while (JsonObjectNext(&scan, &key, &value))
	{
		const SilverMapEntry *entry;
		const char *name = key.start + 1;
		int			len = key.end - key.start - 2;

		if (key.escaped)
		{
			JsonUnescape(&key, &row->scratch);
			name = row->scratch.data;
			len = row->scratch.len;
		}
		/* no alias is longer than an identifier */
		if (pathlen + 1 + len > SILVER_MAX_ID_BYTES)
			continue;
		path[pathlen] = '.';
		memcpy(path + pathlen + 1, name, len);
		entry = SilverMapFind(silver_guess.map, path, pathlen + 1 + len);
		if (entry == NULL)
			continue;
		if (entry->prefix)
		{
			SilverForgetPaths(ev, path, pathlen + 1 + len);
			/* an object is no field's value: paths go through it */
			if (value.kind == JV_OBJECT)
			{
				SilverNested(row, ev, path, pathlen + 1 + len, &value);
				continue;
			}
		}
		if (entry->field >= 0)
			SilverRecordField(row, ev, entry, &key, &value, true);
	}
}

/*
 * Record a member of the event object: a field (under its name or an
 * alias), or one for attrs.  An object that path aliases go through is no
 * field's value (category=category.name reads {"category":{"name":...}}): it
 * is kept in attrs whole, and looked into; given again, its last copy is the
 * one read.
 */
static void
SilverMember(SilverRow *row, SilverEvent *ev, const JsonValue *key,
			 const JsonValue *value)
{
	const SilverMapEntry *entry = SilverLookupKey(key, &row->scratch);

	if (entry == NULL)
	{
		SilverAttr(row, key, value);
		return;
	}
	if (unlikely(entry->prefix))
	{
		SilverForgetPaths(ev, entry->name, entry->len);
		if (value->kind == JV_OBJECT)
		{
			char		path[SILVER_MAX_ID_BYTES + 1];

			memcpy(path, entry->name, entry->len);
			SilverNested(row, ev, path, entry->len, value);
			SilverAttr(row, key, value);
			return;
		}
	}
	if (entry->field < 0)
	{
		SilverAttr(row, key, value);
		return;
	}
	SilverRecordField(row, ev, entry, key, value, false);
}

/*
 * Scan: check that the payload is one JSON object, and keep its members:
 * the known fields in ev (JV_NONE when absent), the others in row->attrs as
 * object text without its closing brace (empty when none).  Returns false
 * when it rejected the payload.
 */
static bool
SilverScan(const char *data, int len, SilverRow *row, SilverEvent *ev)
{
	JsonScan	scan;
	JsonValue	key,
				value;

	for (int f = 0; f < NUM_FIELDS; f++)
		ev->fields[f].kind = JV_NONE;
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
		SilverLookupStart();
		while (JsonObjectNext(&scan, &key, &value))
			SilverMember(row, ev, &key, &value);
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

/* How a message names field f: "user_id", or "user_id" (sent as "userId"). */
static char *
SilverFieldName(const SilverEvent *ev, int f)
{
	const JsonValue *key = &ev->keys[f];

	if (ev->fields[f].kind == JV_NONE || ev->ranks[f] == 0)
		return psprintf("\"%s\"", silver_fields[f].name);
	if (ev->paths[f] != NULL)
		return psprintf("\"%s\" (sent as \"%.*s\")", silver_fields[f].name,
						pg_mbcliplen(ev->paths[f], strlen(ev->paths[f]), SILVER_EXCERPT),
						ev->paths[f]);
	return psprintf("\"%s\" (sent as %.*s)", silver_fields[f].name,
					pg_mbcliplen(key->start, key->end - key->start, SILVER_EXCERPT),
					key->start);
}

/* Is a field present: not absent, not null, not an empty string? */
static inline bool
SilverPresent(const JsonValue *v)
{
	return v->kind != JV_NONE && !SilverVoid(v);
}

/*
 * Read a price or quantity sent as a string that holds exactly a JSON number
 * (after unescaping): the field becomes that number, read by the same rules
 * as one sent as a number.  Returns false, the payload rejected, when the
 * string holds anything else.
 */
static bool
SilverStringNumber(SilverEvent *ev, int f, SilverRow *row)
{
	JsonValue  *v = &ev->fields[f];
	const char *p;
	int			len;
	JsonScan	scan;
	JsonValue	num;

	SilverValueBytes(v, &row->scratch, &p, &len);
	JsonScanStart(&scan, p, len);
	if (len > 0 && (*p == '-' || isdigit((unsigned char) *p)) &&
		JsonScanValue(&scan, &num, 0) && scan.p == scan.end)
	{
		if (v->escaped)
		{
			/* scratch is reused before the value is read: keep a copy */
			num.start = pnstrdup(p, len);
			num.end = num.start + len;
		}
		*v = num;
		return true;
	}
	if (scan.error != NULL && strcmp(scan.reason, "number_out_of_range") == 0)
		SilverReject(row, "number_out_of_range", "field %s holds a number with too many digits or too large an exponent",
					 SilverFieldName(ev, f));
	else
		SilverReject(row, "wrong_type", "field %s must be %s or a string holding one, not %.*s",
					 SilverFieldName(ev, f), f == F_PRICE ? "a number" : "an integer",
					 SilverExcerpt(v), v->start);
	return false;
}

/*
 * Validate the fields' presence, types and lengths: required fields present,
 * not null, not empty (event_id may be missing when it is derived); each
 * field of its type.  A null optional field is marked absent.  Returns false
 * when it rejected the payload.
 */
static bool
SilverCheckFields(SilverEvent *ev, SilverRow *row, SilverValues *values)
{
	JsonValue  *fields = ev->fields;

	values->derive_id = false;
	for (int f = 0; f < NUM_FIELDS; f++)
	{
		const char *aliases;

		if (!silver_fields[f].required || SilverPresent(&fields[f]))
			continue;
		if (f == F_EVENT_ID && silver_id_fields != NULL)
		{
			values->derive_id = true;
			fields[f].kind = JV_NONE;
			continue;
		}
		aliases = SilverFieldMap()->aliases_of[f];
		if (fields[f].kind == JV_STRING)
			SilverReject(row, "missing_field", "required field %s is empty",
						 SilverFieldName(ev, f));
		else if (aliases != NULL)
			SilverReject(row, "missing_field", "required field \"%s\" is missing (and so are its aliases %s)",
						 silver_fields[f].name, aliases);
		else
			SilverReject(row, "missing_field", "required field \"%s\" is missing",
						 silver_fields[f].name);
		return false;
	}

	/* types; null counts as absent for optional fields */
	for (int f = 0; f < NUM_FIELDS; f++)
	{
		JsonValue  *v = &fields[f];
		const char *expected = NULL;

		if (v->kind == JV_NONE || v->kind == JV_NULL)
		{
			v->kind = JV_NONE;
			continue;
		}
		if (f == F_TS)
		{
			if (v->kind != JV_STRING && v->kind != JV_NUMBER)
				expected = "a string (ISO-8601) or a number (epoch)";
		}
		else if (f == F_PRICE || f == F_QUANTITY)
		{
			if (v->kind == JV_STRING && v->end - v->start == 2)
			{
				/* an empty cell of a CSV export: absent */
				v->kind = JV_NONE;
				continue;
			}
			if (v->kind == JV_STRING && !SilverStringNumber(ev, f, row))
				return false;
			if (v->kind != JV_NUMBER)
				expected = f == F_PRICE ? "a number or a string holding one" :
					"an integer or a string holding one";
		}
		else if (v->kind != JV_STRING && !(v->kind == JV_NUMBER && v->integral))
			expected = "a string or an integer";
		if (expected)
		{
			if (v->kind == JV_NUMBER)
				SilverReject(row, "wrong_type", "field %s must be %s, not %.*s",
							 SilverFieldName(ev, f), expected, SilverExcerpt(v), v->start);
			else
				SilverReject(row, "wrong_type", "field %s must be %s, not %s",
							 SilverFieldName(ev, f), expected, JsonKindName(v->kind));
			return false;
		}
		if (silver_fields[f].identifier &&
			SilverTextLength(v, &row->scratch) > SILVER_MAX_ID_BYTES)
		{
			SilverReject(row, "value_too_long", "field %s is longer than %d bytes",
						 SilverFieldName(ev, f), SILVER_MAX_ID_BYTES);
			return false;
		}
	}
	return true;
}

/* A timestamp in ISO style and UTC, for messages, whatever DateStyle says. */
static char *
SilverIsoText(TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;
	char		buf[MAXDATELEN + 1];

	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		return pstrdup("(out of range)");
	tm.tm_isdst = 0;			/* print the zone: +00 */
	EncodeDateTime(&tm, fsec, true, 0, NULL, USE_ISO_DATES, buf);
	return pstrdup(buf);
}

/*
 * The detail of an epoch ts outside the accepted times: what it is in
 * clickstream.epoch_unit, and the unit it fits, if one does.
 */
static char *
SilverEpochDetail(const JsonValue *v, SilverRow *row)
{
	static const char *const units[] = {[EPOCH_UNIT_MS] = "ms",[EPOCH_UNIT_S] = "s",[EPOCH_UNIT_US] = "us"};
	StringInfoData detail;
	const char *p;
	int			len;
	int64		us;
	bool		in_years;

	initStringInfo(&detail);
	SilverValueBytes(v, &row->scratch, &p, &len);
	appendStringInfo(&detail, "ts %.*s as %s ", SilverExcerpt(v), v->start,
					 SilverEpochUnitName(cs_epoch_unit));
	if (SilverEpochMicros(p, p + len, cs_epoch_unit, &us, &in_years) && in_years)
		appendStringInfo(&detail, "is %s", SilverIsoText(SilverFromUnixMicros(us)));
	else
		appendStringInfoString(&detail, "is outside years 1 to 9999");
	for (int unit = 0; unit < lengthof(units); unit++)
	{
		if (unit == cs_epoch_unit ||
			!SilverEpochMicros(p, p + len, unit, &us, &in_years) || !in_years ||
			us < SILVER_EPOCH_MIN_US || us >= SILVER_EPOCH_MAX_US)
			continue;
		appendStringInfo(&detail, "; as %s it is %s: set clickstream.epoch_unit = '%s'",
						 SilverEpochUnitName(unit), SilverIsoText(SilverFromUnixMicros(us)),
						 units[unit]);
		return detail.data;
	}
	appendStringInfo(&detail, ", outside the epoch times accepted in any unit (%s to %s): send it as an ISO-8601 string",
					 SilverIsoText(SilverFromUnixMicros(SILVER_EPOCH_MIN_US)),
					 SilverIsoText(SilverFromUnixMicros(SILVER_EPOCH_MAX_US)));
	return detail.data;
}

/*
 * Validate the values of checked fields and derive what the row needs:
 * price and quantity in range (read exactly), the timestamp (not too far
 * ahead, its day and hour in clickstream.timezone within years 1 to 9999),
 * the canonical event type, an order id and a price for a purchase.
 * Returns false when it rejected the payload.
 */
static bool
SilverCheckValues(SilverEvent *ev, SilverRow *row, SilverValues *values)
{
	const JsonValue *fields = ev->fields;
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;
	SilverTs	ts;
	const char *type;
	int			typelen;

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
		/* its exact value must be an integer, whatever the notation */
		const JsonValue *v = &fields[F_QUANTITY];
		int64		q = 0;
		bool		negative = false;
		bool		exact = true;
		bool		too_large;
		bool		fits = SilverDecimal(v->start, v->end, 0, PG_INT32_MAX, &q, &negative, &exact, &too_large);

		if (fits && !exact)
		{
			SilverReject(row, "wrong_type", "field %s must be an integer, not %.*s",
						 SilverFieldName(ev, F_QUANTITY), SilverExcerpt(v), v->start);
			return false;
		}
		if (!fits || negative || q < 1)
		{
			SilverReject(row, "invalid_quantity", "quantity %.*s is not between 1 and %d",
						 SilverExcerpt(v), v->start, PG_INT32_MAX);
			return false;
		}
		values->quantity = (int32) q;
	}

	/* the timestamp */
	ts = SilverParseTs(&fields[F_TS], &row->scratch, &values->ts);
	if (ts == SILVER_TS_NO_ZONE)
	{
		SilverReject(row, "timestamp_without_zone",
					 "ts %.*s has no time zone (clickstream.timestamp_without_zone is reject)",
					 SilverExcerpt(&fields[F_TS]), fields[F_TS].start);
		return false;
	}
	if (ts == SILVER_TS_EPOCH_RANGE)
	{
		SilverReject(row, "invalid_timestamp", "%s", SilverEpochDetail(&fields[F_TS], row));
		return false;
	}
	if (ts != SILVER_TS_OK)
	{
		SilverReject(row, "invalid_timestamp",
					 "ts %.*s is neither ISO-8601 nor epoch %s (years 1 to 9999)",
					 SilverExcerpt(&fields[F_TS]), fields[F_TS].start, SilverEpochUnitName(cs_epoch_unit));
		return false;
	}
	if (values->ts > GetCurrentTransactionStartTimestamp() + (int64) cs_max_clock_skew * USECS_PER_SEC)
	{
		SilverReject(row, "timestamp_in_future",
					 "ts %s is more than clickstream.max_clock_skew (%d s) ahead of the server clock",
					 timestamptz_to_str(values->ts), cs_max_clock_skew);
		return false;
	}

	/* the event type, canonical */
	SilverValueBytes(&fields[F_EVENT_TYPE], &row->scratch, &type, &typelen);
	values->event_type = NULL;
	if (silver_type_map != NULL)
	{
		const SilverMapEntry *entry = SilverMapFind(silver_type_map, type, typelen);

		if (entry != NULL)
		{
			values->event_type = type = entry->value;
			values->event_type_len = typelen = entry->value_len;
		}
	}
	values->purchase = typelen == 8 && memcmp(type, "purchase", 8) == 0;
	if (values->purchase && cs_require_order_id && !SilverPresent(&fields[F_ORDER_ID]))
	{
		SilverReject(row, "purchase_without_order", "a purchase must carry a non-empty order_id");
		return false;
	}
	if (values->purchase && !values->has_price)
	{
		SilverReject(row, "purchase_without_price", "a purchase must carry a price");
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

/*
 * The event_id of an event that has none: SHA-256 of the canonical forms of
 * the fields of clickstream.event_id_fields, each followed by a zero byte (a
 * field that is absent is the byte 0xFF), its first bytes in hex.  The
 * canonical forms are those silver stores (text as decoded, an integer's
 * digits, the canonical event type), ts in microseconds since 1970-01-01 UTC,
 * price without trailing fractional zeros, quantity in decimal.
 * docs/events.md shows the same in SQL.
 */
static Datum
SilverDerivedId(const SilverEvent *ev, const SilverValues *values, SilverRow *row)
{
	StringInfo	src = &row->idsrc;
	uint8		digest[32];
	char		hex[SILVER_ID_HASH_BYTES * 2];

	resetStringInfo(src);
	for (int i = 0; i < silver_id_fields->nfields; i++)
	{
		int			f = silver_id_fields->fields[i];
		const JsonValue *v = &ev->fields[f];

		if (f == F_TS)
		{
			char		num[MAXINT8LEN + 1];

			appendBinaryStringInfo(src, num,
								   pg_lltoa(values->ts + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY, num));
		}
		else if (f == F_PRICE)
		{
			if (values->has_price)
				appendStringInfoString(src,
									   DatumGetCString(DirectFunctionCall1(numeric_out,
																		   DirectFunctionCall1(numeric_trim_scale, values->price))));
			else
				appendStringInfoChar(src, SILVER_ID_ABSENT);
		}
		else if (f == F_QUANTITY)
		{
			if (values->has_quantity)
				appendStringInfo(src, "%d", values->quantity);
			else
				appendStringInfoChar(src, SILVER_ID_ABSENT);
		}
		else if (f == F_EVENT_TYPE && values->event_type != NULL)
			appendBinaryStringInfo(src, values->event_type, values->event_type_len);
		else if (v->kind == JV_STRING || v->kind == JV_NUMBER)
		{
			const char *p;
			int			len;

			SilverValueBytes(v, &row->scratch, &p, &len);
			appendBinaryStringInfo(src, p, len);
		}
		else
			appendStringInfoChar(src, SILVER_ID_ABSENT);
		appendStringInfoChar(src, '\0');
	}

	Sha256Hash(src->data, src->len, digest);
	hex_encode((char *) digest, SILVER_ID_HASH_BYTES, hex);
	return PointerGetDatum(cstring_to_text_with_len(hex, sizeof(hex)));
}

/* Build: fill every event column of row (reason NULL) from a valid event. */
static void
SilverBuild(const SilverEvent *ev, const SilverValues *values, SilverRow *row)
{
	const JsonValue *fields = ev->fields;

	for (int i = 0; i < SILVER_NUM_COLS; i++)
		row->nulls[i] = true;
	for (int f = 0; f < NUM_FIELDS; f++)
	{
		int			col = silver_fields[f].column;

		if (col >= 0 && (fields[f].kind == JV_STRING || fields[f].kind == JV_NUMBER))
		{
			row->values[col] = SilverText(&fields[f], &row->scratch);
			row->nulls[col] = false;
		}
	}
	if (values->event_type != NULL)
		row->values[SILVER_COL_EVENT_TYPE] =
			PointerGetDatum(cstring_to_text_with_len(values->event_type, values->event_type_len));
	if (values->derive_id)
	{
		row->values[SILVER_COL_EVENT_ID] = SilverDerivedId(ev, values, row);
		row->nulls[SILVER_COL_EVENT_ID] = false;
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
		row->values[SILVER_COL_REVENUE] = silver_constants.zero;
	else
		row->values[SILVER_COL_REVENUE] =
			DirectFunctionCall2(numeric_mul, values->price,
								NumericGetDatum(int64_to_numeric(values->has_quantity ?
																 values->quantity : 1)));
	row->nulls[SILVER_COL_REVENUE] = false;

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
	SilverEvent ev;
	SilverValues values;

	if (SilverScan(data, len, row, &ev) &&
		SilverCheckFields(&ev, row, &values) &&
		SilverCheckValues(&ev, row, &values))
		SilverBuild(&ev, &values, row);
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

	if (row == NULL || row->scratch.maxlen > 1024 * 1024 || row->attrs.maxlen > 1024 * 1024 ||
		row->idsrc.maxlen > 1024 * 1024)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		if (row == NULL)
			row = palloc0(sizeof(SilverRow));
		else
		{
			pfree(row->scratch.data);
			pfree(row->attrs.data);
			pfree(row->idsrc.data);
		}
		initStringInfo(&row->scratch);
		initStringInfo(&row->attrs);
		initStringInfo(&row->idsrc);
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
