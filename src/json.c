/*-------------------------------------------------------------------------
 *
 * json.c
 *	  A strict RFC 8259 scanner for the event parser (silver.c).
 *
 * It validates a whole document without building anything: a scanned value
 * is its kind and where it lies in the payload, so the parser keeps the
 * known fields as spans and copies out only what it needs.  Anything that
 * jsonb_in or numeric_in could refuse later (\u0000, lone surrogates, huge
 * exponents, deep nesting) is refused here first, with a reason and a
 * human-readable error: a bad payload never raises an error.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "mb/pg_wchar.h"

#include "json.h"

/* Deepest nesting of arrays and objects accepted in a payload. */
#define JSON_MAX_DEPTH 64
/* Numbers must fit numeric comfortably: digits and exponent are bounded. */
#define JSON_MAX_NUMBER_DIGITS 1000
#define JSON_MAX_EXPONENT 1000

static const char *const json_kind_names[] = {
	"nothing", "a string", "a number", "true", "false", "null", "an object", "an array"
};

static bool JsonScanString(JsonScan *s, JsonValue *v);

/* How a message names a kind of value ("a string", "an object", ...). */
const char *
JsonKindName(JsonKind kind)
{
	return json_kind_names[kind];
}

/* Start scanning the len bytes at data. */
void
JsonScanStart(JsonScan *s, const char *data, int len)
{
	s->p = data;
	s->end = data + len;
	s->error = NULL;
	s->reason = NULL;
	s->closed = false;
}

/* Record the first scan error; always returns false. */
bool
JsonScanFail(JsonScan *s, const char *reason, const char *error)
{
	if (s->error == NULL)
	{
		s->error = error;
		s->reason = reason;
	}
	return false;
}

/* Value of one hex digit, or -1. */
static inline int
JsonHex(char c)
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
JsonHex4(const char *p, const char *end)
{
	int			cp = 0;

	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++)
	{
		int			h = JsonHex(p[i]);

		if (h < 0)
			return -1;
		cp = (cp << 4) | h;
	}
	return cp;
}

/* Scan a string starting at its opening quote; validates every escape. */
static bool
JsonScanString(JsonScan *s, JsonValue *v)
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
			return JsonScanFail(s, "invalid_json", "control character inside a string");
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
					int			cp = JsonHex4(p + 2, s->end);

					if (cp < 0)
						return JsonScanFail(s, "invalid_json", "invalid \\u escape");
					if (cp == 0)
						return JsonScanFail(s, "invalid_json", "\\u0000 is not supported in text");
					p += 6;
					if (cp >= 0xDC00 && cp <= 0xDFFF)
						return JsonScanFail(s, "invalid_json", "Unicode low surrogate without a high surrogate");
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						int			lo = (s->end - p >= 6 && p[0] == '\\' && p[1] == 'u') ?
							JsonHex4(p + 2, s->end) : -1;

						if (lo < 0xDC00 || lo > 0xDFFF)
							return JsonScanFail(s, "invalid_json", "Unicode high surrogate without a low surrogate");
						p += 6;
					}
					break;
				}
			default:
				return JsonScanFail(s, "invalid_json", "invalid escape in a string");
		}
	}
	return JsonScanFail(s, "invalid_json", "unterminated string");
}

/* Scan a number (RFC 8259 grammar, bounded size). */
static bool
JsonScanNumber(JsonScan *s, JsonValue *v)
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
		return JsonScanFail(s, "invalid_json", "invalid number");
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
			return JsonScanFail(s, "invalid_json", "invalid number");
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
			return JsonScanFail(s, "invalid_json", "invalid number");
		while (p < s->end && isdigit((unsigned char) *p))
		{
			if (exponent <= JSON_MAX_EXPONENT)
				exponent = exponent * 10 + (*p - '0');
			p++;
		}
	}
	if (digits > JSON_MAX_NUMBER_DIGITS || exponent > JSON_MAX_EXPONENT)
		return JsonScanFail(s, "number_out_of_range", "a number has too many digits or too large an exponent");
	s->p = v->end = p;
	return true;
}

/* Match a literal (true, false, null). */
static bool
JsonScanLiteral(JsonScan *s, JsonValue *v, const char *word, JsonKind kind)
{
	size_t		len = strlen(word);

	if ((size_t) (s->end - s->p) < len || memcmp(s->p, word, len) != 0)
		return JsonScanFail(s, "invalid_json", "invalid token");
	v->kind = kind;
	v->start = s->p;
	s->p = v->end = s->p + len;
	return true;
}

/* Scan an object or array (contents validated, not kept). */
static bool
JsonScanContainer(JsonScan *s, JsonValue *v, int depth)
{
	bool		object = *s->p == '{';
	char		close = object ? '}' : ']';
	JsonValue	item;

	if (depth >= JSON_MAX_DEPTH)
		return JsonScanFail(s, "invalid_json", "nested too deeply");
	v->kind = object ? JV_OBJECT : JV_ARRAY;
	v->start = s->p++;
	JsonSkipSpace(s);
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
				return JsonScanFail(s, "invalid_json", "expected a key");
			if (!JsonScanString(s, &item))
				return false;
			JsonSkipSpace(s);
			if (s->p >= s->end || *s->p != ':')
				return JsonScanFail(s, "invalid_json", "expected ':'");
			s->p++;
			JsonSkipSpace(s);
		}
		if (!JsonScanValue(s, &item, depth + 1))
			return false;
		JsonSkipSpace(s);
		if (s->p < s->end && *s->p == ',')
		{
			s->p++;
			JsonSkipSpace(s);
			continue;
		}
		if (s->p < s->end && *s->p == close)
		{
			s->p++;
			v->end = s->p;
			return true;
		}
		return JsonScanFail(s, "invalid_json",
							s->p >= s->end ? "unexpected end of input" : "expected ',' or a closing bracket");
	}
}

/* Scan any value at s->p (whitespace already skipped). */
bool
JsonScanValue(JsonScan *s, JsonValue *v, int depth)
{
	if (s->p >= s->end)
		return JsonScanFail(s, "invalid_json", "unexpected end of input");
	switch (*s->p)
	{
		case '"':
			return JsonScanString(s, v);
		case '{':
		case '[':
			return JsonScanContainer(s, v, depth);
		case 't':
			return JsonScanLiteral(s, v, "true", JV_TRUE);
		case 'f':
			return JsonScanLiteral(s, v, "false", JV_FALSE);
		case 'n':
			return JsonScanLiteral(s, v, "null", JV_NULL);
		default:
			if (*s->p == '-' || isdigit((unsigned char) *s->p))
				return JsonScanNumber(s, v);
			return JsonScanFail(s, "invalid_json", "invalid token");
	}
}

/* Append code point cp as UTF-8. */
static void
JsonAppendUtf8(StringInfo buf, int cp)
{
	unsigned char u[4];

	unicode_to_utf8((pg_wchar) cp, u);
	appendBinaryStringInfo(buf, (char *) u, pg_utf_mblen(u));
}

/* Decode a scanned string (without its quotes) into buf. */
void
JsonUnescape(const JsonValue *v, StringInfo buf)
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
					int			cp = JsonHex4(q + 2, end);

					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						cp = 0x10000 + ((cp - 0xD800) << 10) + (JsonHex4(q + 8, end) - 0xDC00);
						q += 6;
					}
					JsonAppendUtf8(buf, cp);
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

/*
 * Start reading the members of the object at s->p (its '{'), the top level
 * of a document.
 */
void
JsonObjectBegin(JsonScan *s)
{
	s->p++;
	JsonSkipSpace(s);
	s->closed = false;
	if (s->p < s->end && *s->p == '}')
	{
		s->p++;
		s->closed = true;
	}
}

/*
 * Read the next member of the object JsonObjectBegin started: its key and
 * value (scanned, validated).  Returns false after the last member, or at an
 * error (then s->error is set); s->p is then past the object or at the error.
 */
bool
JsonObjectNext(JsonScan *s, JsonValue *key, JsonValue *value)
{
	if (s->closed || s->error != NULL)
		return false;
	if (s->p >= s->end || *s->p != '"')
		return JsonScanFail(s, "invalid_json",
							s->p >= s->end ? "unexpected end of input" : "expected a key");
	if (!JsonScanString(s, key))
		return false;
	JsonSkipSpace(s);
	if (s->p >= s->end || *s->p != ':')
		return JsonScanFail(s, "invalid_json", "expected ':'");
	s->p++;
	JsonSkipSpace(s);
	if (!JsonScanValue(s, value, 1))
		return false;
	JsonSkipSpace(s);
	if (s->p < s->end && *s->p == ',')
	{
		s->p++;
		JsonSkipSpace(s);
		return true;
	}
	if (s->p < s->end && *s->p == '}')
	{
		s->p++;
		s->closed = true;
		return true;
	}
	return JsonScanFail(s, "invalid_json",
						s->p >= s->end ? "unexpected end of input" : "expected ',' or '}'");
}
