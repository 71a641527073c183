/*-------------------------------------------------------------------------
 *
 * eventgen.c
 *	  Deterministic, realistic clickstream event generator.  Writes JSON
 *	  events to Kafka (one per message, key = user_id) or to a file (one per
 *	  line, or as PostgreSQL COPY text rows shaped like clickstream.bronze).
 *
 * Usage:
 *	  tools/eventgen [--seed N] [--count N | --duration SECONDS] [--rate N]
 *		  [--fast] [--start TIME] [--users N] [--products N] [--concurrency K]
 *		  (--brokers ADDR [--topic NAME] [--header KEY=VALUE]... [--producer-option KEY=VALUE]...
 *		   | --output FILE|- [--format jsonl|copy] [--topic NAME]
 *			 [--partitions N])
 *		  [--dup-share F] [--bad-share F] [--late-share F] [--return-share F]
 *		  [--bad-kinds k1,k2,...] [--oversize-bytes N] [--manifest FILE]
 *
 *	  Defaults: seed 42, count 1000, rate 1000/s, start now, 10000 users,
 *	  500 products, concurrency min(users/10, 2000), topic clickstream,
 *	  8 partitions (COPY rows: partition = crc32(key) % N, like librdkafka's
 *	  consistent partitioner), format jsonl, oversize 100000 bytes, all
 *	  shares 0 but --return-share 1.  --start is ISO-8601 with a zone (2026-11-01T00:00:00Z) or
 *	  epoch ms.  Message i gets the simulated time start + i/rate; it is the
 *	  Kafka message timestamp and the COPY kafka_timestamp.  Without --fast,
 *	  messages are also paced at --rate in wall-clock time and --duration
 *	  stops after that many wall seconds; with --fast, --duration means
 *	  rate * SECONDS messages.  --count and --duration count every message.
 *	  Kafka: acks=all, idempotent, consistent partitioner; exits 1 if any
 *	  message was not delivered.  SIGINT/SIGTERM stop early (exit 0).
 *
 * Determinism: all randomness comes from one xoshiro256** stream seeded by
 * --seed and consumed identically whatever the output, so the same options
 * (with an explicit --start) give byte-identical events in every mode.
 *
 * Traffic model: a pool of K concurrently active sessions.  Each message
 * picks one at random and emits its next event at the simulated clock, so
 * events of a session are about K/rate seconds apart; a session picked after
 * more than 20 minutes of silence has timed out (the user left) and is
 * replaced without emitting.  A session plans its script when it starts: a
 * landing page, 1-16 page views (product, category, search pages); 30% of
 * sessions add 1-3 products to the cart, 10% of those remove one, 50% with a
 * non-empty cart begin checkout and 60% of those purchase: one purchase
 * event per cart line sharing an order_id (o00000042-5e1f0a: a counter and
 * a tag of the seed), then a confirmation page view.
 * A finished session is replaced by one of the idle user whose return time
 * (last event + log-uniform 35 minutes to 2 days; with --return-share F, a
 * user comes back after a session with probability F, else never) comes first and has
 * passed, else of a never seen user, else of that first idle user if away
 * for 35 minutes; failing all, the session goes on with more page views
 * (too few users for the rate: "sessions_stretched").  A user is never in
 * two sessions at once, so per user (in clock time) events of a session are
 * under 20 minutes apart and sessions over 35 minutes apart.  Users have a
 * fixed device and country, products a fixed category and log-normal price,
 * product popularity is skewed.  60% of sessions carry one utm campaign on
 * all their events; referrers are external (or absent) on the landing page,
 * then the previous page.  90% of ts are ISO-8601 strings, 10% epoch ms
 * numbers; 5% of events carry an extra key that consumers must keep.
 *
 * Faults, as shares of messages: duplicates (byte-identical copies of one of
 * the last 32 valid events), malformed messages (extra messages for the user
 * of a random active session, kinds drawn uniformly from --bad-kinds) and
 * late events (valid, ts 2 minutes to 6 hours before the clock).
 *
 * Manifest (key=value lines): messages valid duplicates malformed
 * malformed.<kind> late oversize users_seen sessions sessions_stretched
 * purchases (valid purchase events) orders event_type.<type>.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#define MS_PER_MIN		60000LL
#define MS_PER_HOUR		(60 * MS_PER_MIN)
#define SESSION_TIMEOUT	(20 * MS_PER_MIN)
#define MIN_RETURN		(35 * MS_PER_MIN)
#define MAX_RETURN		(48 * MS_PER_HOUR)
#define MAX_ACTIONS		32
#define DUP_RING		32
#define MAX_HEADERS		32
#define UNSEEN			INT64_MIN
#define lengthof(a)		((int) (sizeof(a) / sizeof((a)[0])))

enum
{
	EV_PAGE_VIEW, EV_ADD_TO_CART, EV_REMOVE_FROM_CART, EV_BEGIN_CHECKOUT,
	EV_PURCHASE, NUM_EVENT_TYPES
};

enum
{
	PG_NONE, PG_EXTERNAL, PG_HOME, PG_CATEGORY, PG_PRODUCT, PG_SEARCH,
	PG_CART, PG_CHECKOUT, PG_CONFIRMATION
};

enum
{
	BAD_INVALID_JSON, BAD_NOT_OBJECT, BAD_MISSING_FIELD, BAD_EMPTY_FIELD,
	BAD_WRONG_TYPE, BAD_NEGATIVE_PRICE, BAD_BAD_QUANTITY, BAD_INVALID_UTF8,
	BAD_BAD_TIMESTAMP, BAD_FUTURE_TIMESTAMP, BAD_PURCHASE_WITHOUT_ORDER,
	BAD_OVERSIZE, NUM_BAD_KINDS, BAD_NONE = -1
};

static const char *const event_type_names[] = {
	"page_view", "add_to_cart", "remove_from_cart", "begin_checkout", "purchase"
};
static const char *const required_names[] = {"event_id", "event_type", "user_id", "ts"};
static const char *const bad_kind_names[] = {
	"invalid_json", "not_object", "missing_field", "empty_field",
	"wrong_type", "negative_price", "bad_quantity", "invalid_utf8",
	"bad_timestamp", "future_timestamp", "purchase_without_order", "oversize"
};

/*
 * Variants of each kind, drawn uniformly.  not_object: [event], 42, string,
 * null.  missing/empty_field: one of required_names.  wrong_type: price
 * "abc", quantity 1.5, quantity "two", user_id object, ts true.
 * bad_quantity: 0, -1, -3.  invalid_utf8: C3 28, FF.
 */
static const int bad_variants[] = {1, 4, 4, 4, 5, 1, 3, 2, 4, 1, 1, 1};
static const char *const not_objects[] = {NULL, "42", "\"page_view\"", "null"};
static const int bad_quantities[] = {0, -1, -3};
static const char *const bad_timestamps[] = {
	"2026-13-45T25:61:00Z", "yesterday", "1700000000000abc", "31/12/2026 10:00"
};

static const char *const categories[] = {
	"electronics", "books", "clothing", "home_kitchen", "beauty", "sports",
	"toys", "grocery", "garden", "automotive", "health", "jewelry"
};
static const int category_weight[] = {10, 12, 14, 10, 8, 8, 7, 9, 5, 5, 6, 6};
static const double category_median[] = {120, 14, 35, 45, 22, 40, 25, 8, 30, 55, 18, 95};
static const char *const search_terms[] = {
	"running+shoes", "usb-c+cable", "coffee+maker", "yoga+mat", "lego",
	"face+cream", "garden+hose", "phone+case"
};
static const char *const devices[] = {"mobile", "desktop", "tablet"};
static const int device_weight[] = {55, 38, 7};
static const char *const countries[] = {
	"US", "DE", "GB", "FR", "IN", "BR", "CA", "JP", "ES", "IT", "NL", "AU",
	"MX", "PL", "SE", "KR"
};
static const int country_weight[] = {28, 10, 9, 7, 7, 6, 5, 5, 4, 4, 3, 3, 3, 2, 2, 2};
static const char *const organic_referrers[] = {
	"https://www.google.com/", "https://www.google.com/", "https://www.google.com/",
	"https://www.bing.com/", "https://duckduckgo.com/", "https://www.facebook.com/",
	"https://t.co/", "https://www.reddit.com/"
};
static const char *const extras[] = {
	"\"app_version\":\"3.2.1\"", "\"app_version\":\"3.3.0-beta\"",
	"\"experiment\":\"checkout_v2\"", "\"consent\":true",
	"\"screen\":{\"w\":390,\"h\":844}"
};

/* utm source, medium, campaign, and the referrer it brings (or none) */
static const char *const campaigns[][4] = {
	{"google", "cpc", "brand_search", "https://www.google.com/"},
	{"google", "cpc", "generic_electronics", "https://www.google.com/"},
	{"bing", "cpc", "brand_search", "https://www.bing.com/"},
	{"facebook", "paid_social", "black_friday_2026", "https://www.facebook.com/"},
	{"instagram", "paid_social", "winter_collection", "https://www.instagram.com/"},
	{"tiktok", "paid_social", "creator_collab", "https://www.tiktok.com/"},
	{"newsletter", "email", "weekly_digest", NULL},
	{"newsletter", "email", "cart_reminder", NULL},
	{"awin", "affiliate", "partner_deals", "https://www.example-deals.com/"},
	{"criteo", "display", "retargeting", NULL}
};

typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

typedef struct User
{
	int64_t		last_ts;		/* clock of its last valid event, or UNSEEN */
	int64_t		return_at;		/* earliest start of its next session */
} User;

/* A planned step: arg is the product, or the category/search term of a view */
typedef struct Action
{
	uint8_t		type;
	uint8_t		page;
	uint8_t		qty;
	uint8_t		new_order;
	int32_t		arg;
} Action;

typedef struct Session
{
	int32_t		user;
	uint8_t		nact;
	uint8_t		pos;
	bool		started;
	int8_t		campaign;		/* -1: none */
	uint8_t		cur_page;		/* page the user is on, and its referrer */
	uint8_t		ref_page;
	int32_t		cur_arg;
	int32_t		ref_arg;
	const char *ext_ref;		/* external referrer of the landing page */
	int64_t		last_ts;
	int64_t		order_no;
	Action		act[MAX_ACTIONS];
} Session;

typedef struct Event
{
	int64_t		seq;			/* determines event_id */
	int64_t		ts;
	int64_t		order_no;		/* 0: none */
	int32_t		user;
	int32_t		product;		/* -1: none */
	int32_t		page_arg;
	int32_t		ref_arg;
	uint8_t		type;
	uint8_t		page;
	uint8_t		ref_page;		/* PG_NONE: no referrer */
	uint8_t		qty;			/* 0: none */
	int8_t		campaign;
	int8_t		extra;			/* -1: none */
	bool		ts_number;
	const char *ext_ref;
} Event;

/* options */
static uint64_t opt_seed = 42;
static int64_t opt_count = -1;
static int64_t opt_users = 10000;
static int64_t opt_products = 500;
static int64_t opt_concurrency = 0;
static int64_t opt_partitions = 8;
/*
 * An oversize message must exceed the server's clickstream.max_message_bytes
 * (the local clusters of tools/cluster.sh use 64kB) yet stay small next to
 * what the local broker keeps per partition (~5 MiB, older messages are
 * dropped): against a server with the default 1MB, pass --oversize-bytes
 * 1100000, and expect each such message to push ~1 MB out of the broker.
 */
static int64_t opt_oversize = 100000;
static double opt_duration = -1;
static double opt_rate = 1000;
static double opt_dup, opt_bad, opt_late;
static double opt_return = 1;	/* share of sessions after which the user comes back */
static int64_t opt_start;
static bool opt_fast, opt_copy;
static const char *opt_brokers, *opt_output, *opt_manifest;
static const char *opt_topic = "clickstream";
static const char *header_kv[MAX_HEADERS];
static const char *producer_opts[MAX_HEADERS];	/* --producer-option K=V */
static int	nproducer_opts = 0;
static int	nheaders;
static int	bad_kinds[NUM_BAD_KINDS];
static int	nbad_kinds;

/* generator state */
static uint64_t rng_s[4];
static uint64_t seed_key;
static User *users;
static int32_t *idle_heap;		/* idle seen users, by return_at */
static int	idle_len;
static int32_t *new_users;		/* never seen users, in arrival order */
static int	next_new;
static Session *slots;
static int	nactive;
static uint8_t *prod_cat;
static int32_t *prod_price;		/* cents */
static int32_t *prod_by_rank;	/* products by popularity */
static int64_t next_seq, order_counter;
static Buf	ring[DUP_RING];		/* last valid events, for duplicates */
static int32_t ring_user[DUP_RING];
static int	ring_len, ring_next;
static Buf	payload, row;
static char hexpairs[512];
static uint32_t crc_table[256];

/* output */
static FILE *out;
static int64_t *part_offset;
static rd_kafka_t *rk;
static rd_kafka_topic_t *rkt;
static rd_kafka_headers_t *headers;
static int64_t delivery_failed;
static char first_error[256];
static volatile sig_atomic_t stop_requested = 0;

/* manifest counters */
static int64_t n_messages, n_valid, n_dup, n_bad, n_late, n_oversize;
static int64_t n_users_seen, n_sessions, n_stretched, n_orders;
static int64_t n_bad_kind[NUM_BAD_KINDS], n_type[NUM_EVENT_TYPES];

/* Report an error and exit. */
static void
die(const char *msg, const char *arg)
{
	fprintf(stderr, "eventgen: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
	exit(1);
}

/* Bijective 64-bit mixer (splitmix64 finalizer). */
static inline uint64_t
mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Next value of the xoshiro256** stream. */
static inline uint64_t
rng_next(void)
{
	uint64_t	result = ((rng_s[1] * 5) << 7 | (rng_s[1] * 5) >> 57) * 9;
	uint64_t	t = rng_s[1] << 17;

	rng_s[2] ^= rng_s[0];
	rng_s[3] ^= rng_s[1];
	rng_s[1] ^= rng_s[2];
	rng_s[0] ^= rng_s[3];
	rng_s[2] ^= t;
	rng_s[3] = rng_s[3] << 45 | rng_s[3] >> 19;
	return result;
}

/* Uniform double in [0, 1). */
static inline double
rng_unit(void)
{
	return (rng_next() >> 11) * 0x1.0p-53;
}

/* Uniform integer in [0, n). */
static inline uint32_t
rng_below(uint32_t n)
{
	return (uint32_t) (((unsigned __int128) rng_next() * n) >> 64);
}

#define rng_chance(p)	(rng_unit() < (p))

/* Index drawn with integer weights summing to 100, using value r. */
static int
weighted(const int *w, int n, uint32_t r)
{
	int			x = (int) (r % 100);
	int			i;

	for (i = 0; i < n - 1 && x >= w[i]; i++)
		x -= w[i];
	return i;
}

/* Append n bytes. */
static inline void
put_mem(Buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap)
	{
		b->cap = (b->len + n) * 2 + 1024;
		if ((b->data = realloc(b->data, b->cap)) == NULL)
			die("out of memory", NULL);
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

#define put_lit(b, s)	put_mem((b), (s), sizeof(s) - 1)
#define put_char(b, c)	put_mem((b), &(char){(c)}, 1)
#define put_str(b, s)	put_mem((b), (s), strlen(s))

/* Append a string in double quotes (our strings need no escaping). */
static inline void
put_qstr(Buf *b, const char *s)
{
	put_char(b, '"');
	put_str(b, s);
	put_char(b, '"');
}

/* Append v in decimal, zero-padded to at least width digits. */
static void
put_uint(Buf *b, uint64_t v, int width)
{
	char		tmp[24];
	int			n = sizeof(tmp);

	do
	{
		tmp[--n] = '0' + v % 10;
		v /= 10;
	} while (v != 0 || (int) sizeof(tmp) - n < width);
	put_mem(b, tmp + n, sizeof(tmp) - n);
}

/* Append a signed integer. */
static void
put_int(Buf *b, int64_t v)
{
	if (v < 0)
		put_char(b, '-');
	put_uint(b, v < 0 ? -(uint64_t) v : (uint64_t) v, 1);
}

/* Append a "key": prefix, with a comma unless it is the first key. */
static inline void
put_key(Buf *b, const char *key)
{
	if (b->data[b->len - 1] != '{')
		put_char(b, ',');
	put_qstr(b, key);
	put_char(b, ':');
}

/* Append an id like u000123, p00042 or o00000007, quoted or not. */
static inline void
put_id(Buf *b, char prefix, int64_t n, int width, bool quoted)
{
	if (quoted)
		put_char(b, '"');
	put_char(b, prefix);
	put_uint(b, (uint64_t) n, width);
	if (quoted)
		put_char(b, '"');
}

/* Append lowercase hex of n bytes. */
static void
put_hex(Buf *b, const void *p, size_t n)
{
	const unsigned char *s = p;

	for (size_t i = 0; i < n; i++)
		put_mem(b, hexpairs + 2 * s[i], 2);
}

/* Append the quoted UUID (v4 layout) of event seq: a bijection of seq. */
static void
put_uuid(Buf *b, int64_t seq)
{
	uint64_t	x = mix64((uint64_t) seq ^ seed_key);
	uint64_t	hi = (x & ~0xF000ULL) | 0x4000ULL;
	uint64_t	lo = (2ULL << 62) | (((x >> 12) & 0xF) << 58) |
		(mix64(x + seed_key) & ((1ULL << 58) - 1));

	put_char(b, '"');
	for (int i = 0; i < 16; i++)
	{
		unsigned char byte = (unsigned char) ((i < 8 ? hi : lo) >> (56 - 8 * (i % 8)));

		if (i == 4 || i == 6 || i == 8 || i == 10)
			put_char(b, '-');
		put_hex(b, &byte, 1);
	}
	put_char(b, '"');
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t		era,
				yoe,
				doy;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

/* Append epoch ms as "YYYY-MM-DD<sep>HH:MM:SS.mmm<zone>". */
static void
put_datetime(Buf *b, int64_t ms, char sep, const char *zone)
{
	int64_t		secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
	int64_t		days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
	int64_t		sod = secs - days * 86400;
	int64_t		z = days + 719468;
	int64_t		era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t		doe = z - era * 146097;
	int64_t		yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t		doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t		mp = (5 * doy + 2) / 153;
	int			m = (int) (mp < 10 ? mp + 3 : mp - 9);

	put_uint(b, (uint64_t) (yoe + era * 400 + (m <= 2)), 4);
	put_char(b, '-');
	put_uint(b, m, 2);
	put_char(b, '-');
	put_uint(b, doy - (153 * mp + 2) / 5 + 1, 2);
	put_char(b, sep);
	put_uint(b, sod / 3600, 2);
	put_char(b, ':');
	put_uint(b, sod / 60 % 60, 2);
	put_char(b, ':');
	put_uint(b, sod % 60, 2);
	put_char(b, '.');
	put_uint(b, ms - secs * 1000, 3);
	put_str(b, zone);
}

/* Append the quoted URL of a page (ext: an external one). */
static void
put_url(Buf *b, int page, int32_t arg, const char *ext, const char *suffix)
{
	static const char *const paths[] = {
		[PG_HOME] = "/", [PG_CATEGORY] = "/c/", [PG_PRODUCT] = "/p/",
		[PG_SEARCH] = "/search?q=", [PG_CART] = "/cart",
		[PG_CHECKOUT] = "/checkout", [PG_CONFIRMATION] = "/checkout/confirmation"
	};

	put_char(b, '"');
	if (page == PG_EXTERNAL)
		put_str(b, ext);
	else
	{
		put_lit(b, "https://shop.example.com");
		put_str(b, paths[page]);
		if (page == PG_CATEGORY)
			put_str(b, categories[arg]);
		else if (page == PG_PRODUCT)
			put_id(b, 'p', arg + 1, 5, false);
		else if (page == PG_SEARCH)
			put_str(b, search_terms[arg]);
	}
	put_str(b, suffix);
	put_char(b, '"');
}

/* Start required field f; false if malformation bad drops or empties it. */
static bool
required_field(Buf *b, int f, int bad, int variant)
{
	if (bad == BAD_MISSING_FIELD && variant == f)
		return false;
	put_key(b, required_names[f]);
	if (bad == BAD_EMPTY_FIELD && variant == f)
	{
		put_lit(b, "\"\"");
		return false;
	}
	return true;
}

/* Serialize ev into payload, malformed as kind bad (or BAD_NONE). */
static void
write_event(const Event *ev, int bad, int variant)
{
	Buf		   *b = &payload;
	uint64_t	uh = mix64(seed_key ^ ((uint64_t) (ev->user + 1) * 0x9E3779B97F4A7C15ULL));
	bool		wrong = bad == BAD_WRONG_TYPE;
	size_t		len;

	b->len = 0;
	put_char(b, '{');
	if (required_field(b, 0, bad, variant))
		put_uuid(b, ev->seq);
	if (required_field(b, 1, bad, variant))
		put_qstr(b, event_type_names[ev->type]);
	if (required_field(b, 2, bad, variant))
	{
		put_str(b, wrong && variant == 3 ? "{\"id\":" : "");
		put_id(b, 'u', ev->user + 1, 6, true);
		put_str(b, wrong && variant == 3 ? "}" : "");
	}
	if (!required_field(b, 3, bad, variant))
		;
	else if (wrong && variant == 4)
		put_lit(b, "true");
	else if (bad == BAD_BAD_TIMESTAMP)
		put_qstr(b, bad_timestamps[variant]);
	else if (ev->ts_number)
		put_int(b, ev->ts);
	else
	{
		put_char(b, '"');
		put_datetime(b, ev->ts, 'T', "Z\"");
	}
	if (ev->product >= 0)
	{
		int64_t		cents = prod_price[ev->product];

		put_key(b, "product_id");
		put_id(b, 'p', ev->product + 1, 5, true);
		put_key(b, "category");
		put_qstr(b, categories[prod_cat[ev->product]]);
		put_key(b, "price");
		if (wrong && variant == 0)
			put_lit(b, "\"abc\"");
		else
		{
			put_int(b, bad == BAD_NEGATIVE_PRICE ? -cents / 100 : cents / 100);
			put_char(b, '.');
			put_uint(b, cents % 100, 2);
		}
	}
	if (ev->qty > 0)
	{
		put_key(b, "quantity");
		if (wrong && (variant == 1 || variant == 2))
			put_str(b, variant == 1 ? "1.5" : "\"two\"");
		else
			put_int(b, bad == BAD_BAD_QUANTITY ? bad_quantities[variant] : ev->qty);
	}
	if (ev->order_no > 0)
	{
		/* o00000007-5e1f0a: the seed's tag keeps other runs' orders apart */
		unsigned char tag[3] = {
			(unsigned char) (seed_key >> 16),
			(unsigned char) (seed_key >> 8),
			(unsigned char) seed_key
		};

		put_key(b, "order_id");
		put_char(b, '"');
		put_id(b, 'o', ev->order_no, 8, false);
		put_char(b, '-');
		put_hex(b, tag, sizeof(tag));
		put_char(b, '"');
	}
	put_key(b, "page_url");
	put_url(b, ev->page, ev->page_arg, NULL,
			bad != BAD_INVALID_UTF8 ? "" : variant == 0 ? "?ref=\xC3\x28" : "?ref=\xFF");
	if (ev->ref_page != PG_NONE)
	{
		put_key(b, "referrer");
		put_url(b, ev->ref_page, ev->ref_arg, ev->ext_ref, "");
	}
	if (ev->campaign >= 0)
	{
		put_key(b, "utm_source");
		put_qstr(b, campaigns[ev->campaign][0]);
		put_key(b, "utm_medium");
		put_qstr(b, campaigns[ev->campaign][1]);
		put_key(b, "utm_campaign");
		put_qstr(b, campaigns[ev->campaign][2]);
	}
	put_key(b, "device");
	put_qstr(b, devices[weighted(device_weight, lengthof(devices), (uint32_t) uh)]);
	put_key(b, "country");
	put_qstr(b, countries[weighted(country_weight, lengthof(countries), (uint32_t) (uh >> 32))]);
	if (ev->extra >= 0)
	{
		put_char(b, ',');
		put_str(b, extras[ev->extra]);
	}
	put_char(b, '}');

	len = b->len;
	if (bad == BAD_OVERSIZE)
	{
		/* pad with an extra key up to exactly opt_oversize bytes */
		int64_t		pad = opt_oversize - (int64_t) len - (int64_t) strlen(",\"padding\":\"\"");

		b->len--;
		put_lit(b, ",\"padding\":\"");
		for (int64_t i = 0; i < pad; i++)
			put_char(b, "abcdefghijklmnopqrstuvwxyz012345"[i & 31]);
		put_lit(b, "\"}");
	}
	else if (bad == BAD_INVALID_JSON)
		b->len = 1 + rng_below((uint32_t) len - 2);	/* cut before the '}' */
	else if (bad == BAD_NOT_OBJECT && variant == 0)
	{
		put_lit(b, "]]");
		memmove(b->data + 1, b->data, len);
		b->data[0] = '[';
		b->len = len + 2;
	}
	else if (bad == BAD_NOT_OBJECT)
	{
		b->len = 0;
		put_str(b, not_objects[variant]);
	}
}

/* Delivery report callback: count failures. */
static void
on_delivery(rd_kafka_t *k, const rd_kafka_message_t *m, void *opaque)
{
	(void) k;
	(void) opaque;
	if (m->err && delivery_failed++ == 0)
		snprintf(first_error, sizeof(first_error), "%s", rd_kafka_err2str(m->err));
}

/* Append a COPY text row of the message to row (bronze's first columns). */
static void
put_copy_row(const char *data, size_t len, const char *key, size_t keylen, int64_t clock)
{
	uint32_t	crc = 0xFFFFFFFF;
	int			part;

	for (size_t i = 0; i < keylen; i++)
		crc = crc_table[(crc ^ (unsigned char) key[i]) & 0xFF] ^ (crc >> 8);
	part = (int) ((crc ^ 0xFFFFFFFF) % (uint32_t) opt_partitions);

	row.len = 0;
	put_str(&row, opt_topic);	/* [a-zA-Z0-9._-]: nothing to escape */
	put_char(&row, '\t');
	put_uint(&row, part, 1);
	put_char(&row, '\t');
	put_int(&row, part_offset[part]++);
	put_char(&row, '\t');
	put_datetime(&row, clock, ' ', "+00\t\\\\x");
	put_hex(&row, key, keylen);
	put_lit(&row, "\t\\\\x");
	put_hex(&row, data, len);
	put_char(&row, '\n');
}

/* Send or write one message with the key of user, at simulated time clock. */
static void
emit(const char *data, size_t len, int32_t user, int64_t clock)
{
	char		key[16];
	Buf			kb = {key, 0, sizeof(key)};
	rd_kafka_resp_err_t err;

	put_id(&kb, 'u', user + 1, 6, false);
	n_messages++;
	if (rk == NULL && !opt_copy)
	{
		fwrite(data, 1, len, out);
		putc('\n', out);
	}
	else if (rk == NULL)
	{
		put_copy_row(data, len, key, kb.len, clock);
		fwrite(row.data, 1, row.len, out);
	}
	else
		for (;;)
		{
			rd_kafka_headers_t *h = headers ? rd_kafka_headers_copy(headers) : NULL;

			err = rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt),
									RD_KAFKA_V_KEY(key, kb.len),
									RD_KAFKA_V_VALUE((void *) data, len),
									RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
									RD_KAFKA_V_TIMESTAMP(clock),
									RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
			if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
				break;
			if (h)
				rd_kafka_headers_destroy(h);
			if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			{
				if (delivery_failed++ == 0)
					snprintf(first_error, sizeof(first_error), "%s", rd_kafka_err2str(err));
				break;
			}
			rd_kafka_poll(rk, 10);
		}
}

/* Min-heap order of idle users: return time, then user number. */
static inline bool
heap_less(int32_t a, int32_t b)
{
	return users[a].return_at < users[b].return_at ||
		(users[a].return_at == users[b].return_at && a < b);
}

/* Add an idle user to the heap. */
static void
heap_push(int32_t u)
{
	int			i;

	for (i = idle_len++; i > 0 && heap_less(u, idle_heap[(i - 1) / 2]); i = (i - 1) / 2)
		idle_heap[i] = idle_heap[(i - 1) / 2];
	idle_heap[i] = u;
}

/* Remove and return the idle user returning first. */
static int32_t
heap_pop(void)
{
	int32_t		top = idle_heap[0];
	int32_t		last = idle_heap[--idle_len];
	int			i = 0;
	int			c;

	while ((c = 2 * i + 1) < idle_len)
	{
		if (c + 1 < idle_len && heap_less(idle_heap[c + 1], idle_heap[c]))
			c++;
		if (!heap_less(idle_heap[c], last))
			break;
		idle_heap[i] = idle_heap[c];
		i = c;
	}
	if (idle_len > 0)
		idle_heap[i] = last;
	return top;
}

/* A user who may start a session at clock, or -1 if there is none. */
static int32_t
eligible_user(int64_t clock)
{
	if (idle_len > 0 && users[idle_heap[0]].return_at <= clock)
		return heap_pop();
	if (next_new < opt_users)
		return new_users[next_new++];
	/* none due and none new: the first to return, if away long enough */
	if (idle_len > 0 && clock - users[idle_heap[0]].last_ts >= MIN_RETURN)
		return heap_pop();
	return -1;
}

/* A product drawn by popularity (rank ~ uniform squared). */
static int32_t
pick_product(void)
{
	double		u = rng_unit();

	return prod_by_rank[(int) (u * u * opt_products)];
}

/* Append a step to the session's script; views draw their page's arg. */
static Action *
add_action(Session *s, int type, int page, int32_t product, int qty, bool new_order)
{
	Action	   *a = &s->act[s->nact++];

	a->type = type;
	a->page = page;
	a->qty = qty;
	a->new_order = new_order;
	a->arg = type != EV_PAGE_VIEW ? product
		: page == PG_PRODUCT ? pick_product()
		: page == PG_CATEGORY ? prod_cat[pick_product()]
		: page == PG_SEARCH ? (int32_t) rng_below(lengthof(search_terms)) : 0;
	return a;
}

#define add_view(s, page) add_action((s), EV_PAGE_VIEW, (page), -1, 0, false)

/* Plan a session's script (after a landing page unless continuing). */
static void
plan_session(Session *s, bool continuation)
{
	int32_t		cart[3];
	int			qty[3];
	int			lines = 0;
	bool		carting = rng_chance(0.30);
	int			adds = 0;
	int			views = 1;

	s->nact = s->pos = 0;
	if (carting)
	{
		adds = 1 + rng_chance(0.35);
		adds += rng_chance(0.15);
	}
	while (views < 16 && rng_chance(0.78))
		views++;
	if (!continuation)
	{
		uint32_t	r = rng_below(100);

		add_view(s, r < 40 ? PG_HOME : r < 65 ? PG_CATEGORY : r < 95 ? PG_PRODUCT : PG_SEARCH);
	}
	/* browse; a product viewed may go to the cart; force the missing adds */
	for (int v = 0; v < views || adds > 0; v++)
	{
		uint32_t	r = rng_below(100);
		Action	   *a = add_view(s, v >= views || r < 60 ? PG_PRODUCT : r < 85 ? PG_CATEGORY : PG_SEARCH);
		int			q,
					k;

		if (a->page != PG_PRODUCT || adds == 0 || (v < views && !rng_chance(0.45)))
			continue;
		r = rng_below(100);
		q = r < 80 ? 1 : r < 94 ? 2 : 3 + (int) rng_below(3);
		add_action(s, EV_ADD_TO_CART, PG_PRODUCT, a->arg, q, false);
		adds--;
		for (k = 0; k < lines && cart[k] != a->arg; k++)
			;
		if (k == lines)
		{
			cart[lines] = a->arg;
			qty[lines++] = 0;
		}
		qty[k] += q;
	}
	if (lines > 0 && rng_chance(0.10))
	{
		int			k = (int) rng_below(lines);

		add_view(s, PG_CART);
		add_action(s, EV_REMOVE_FROM_CART, PG_CART, cart[k], qty[k], false);
		cart[k] = cart[--lines];
		qty[k] = qty[lines];
	}
	if (lines > 0 && rng_chance(0.50))
	{
		add_view(s, PG_CART);
		add_action(s, EV_BEGIN_CHECKOUT, PG_CHECKOUT, -1, 0, false);
		if (rng_chance(0.60))
		{
			for (int k = 0; k < lines; k++)
				add_action(s, EV_PURCHASE, PG_CHECKOUT, cart[k], qty[k], k == 0);
			add_view(s, PG_CONFIRMATION);
		}
	}
}

/* Start a new session of user in slot s. */
static void
start_session(Session *s, int32_t user)
{
	s->user = user;
	s->started = false;
	s->order_no = 0;
	s->cur_page = PG_NONE;
	s->campaign = rng_chance(0.60) ? (int8_t) rng_below(lengthof(campaigns)) : -1;
	if (s->campaign >= 0)
		s->ext_ref = campaigns[s->campaign][3];
	else
		s->ext_ref = rng_chance(0.40) ? NULL
			: organic_referrers[rng_below(lengthof(organic_referrers))];
	plan_session(s, false);
}

/*
 * End the session in slot s: its user idles until a drawn return time, or,
 * with --return-share below 1, may never come back.
 */
static void
end_session(Session *s)
{
	double		lo = log((double) MIN_RETURN);
	double		hi = log((double) MAX_RETURN);

	/* a user who does not come back is never eligible again */
	if (opt_return < 1 && rng_unit() >= opt_return)
		return;
	users[s->user].return_at = s->last_ts + (int64_t) exp(lo + rng_unit() * (hi - lo));
	heap_push(s->user);
}

/* Replace the session in slot s if someone can come, else stretch it. */
static bool
replace_session(Session *s, int64_t clock, bool may_stretch)
{
	int32_t		u = eligible_user(clock);

	if (u < 0 && may_stretch)
	{
		plan_session(s, true);
		n_stretched++;
		return true;
	}
	end_session(s);
	if (u >= 0)
		start_session(s, u);
	return u >= 0;
}

/* Pick the session emitting the next valid event, replacing timed out ones. */
static Session *
pick_session(int64_t clock)
{
	for (;;)
	{
		int			i = (int) rng_below(nactive);
		Session    *s = &slots[i];

		if (!s->started || clock - s->last_ts <= SESSION_TIMEOUT)
			return s;
		if (!replace_session(s, clock, nactive == 1))
			slots[i] = slots[--nactive];	/* nobody to come: pool shrinks */
		else if (s->pos == 0 && s->started)
			return s;			/* the last session, stretched */
	}
}

/* Emit the next valid event of a random active session (late: ts moved back). */
static void
emit_valid(int64_t clock, bool late)
{
	Session    *s = pick_session(clock);
	Action	   *a = &s->act[s->pos++];
	User	   *u = &users[s->user];
	Event		ev;

	if (a->type == EV_PAGE_VIEW)
	{
		s->ref_page = s->cur_page != PG_NONE ? s->cur_page : s->ext_ref ? PG_EXTERNAL : PG_NONE;
		s->ref_arg = s->cur_arg;
		s->cur_page = a->page;
		s->cur_arg = a->arg;
	}
	if (a->new_order)
	{
		s->order_no = ++order_counter;
		n_orders++;
	}
	ev.seq = next_seq++;
	ev.ts = late ? clock - 2 * MS_PER_MIN - rng_below(6 * MS_PER_HOUR - 2 * MS_PER_MIN) : clock;
	ev.user = s->user;
	ev.type = a->type;
	ev.page = a->page;
	ev.page_arg = a->arg;
	ev.product = (a->type != EV_PAGE_VIEW || a->page == PG_PRODUCT) ? a->arg : -1;
	ev.qty = a->qty;
	ev.order_no = a->type == EV_PURCHASE ? s->order_no : 0;
	ev.ref_page = s->ref_page;
	ev.ref_arg = s->ref_arg;
	ev.ext_ref = s->ext_ref;
	ev.campaign = s->campaign;
	ev.ts_number = rng_chance(0.10);
	ev.extra = rng_chance(0.05) ? (int8_t) rng_below(lengthof(extras)) : -1;
	write_event(&ev, BAD_NONE, 0);
	emit(payload.data, payload.len, s->user, clock);

	n_users_seen += u->last_ts == UNSEEN;
	n_sessions += !s->started;
	u->last_ts = s->last_ts = clock;
	s->started = true;
	n_valid++;
	n_late += late;
	n_type[ev.type]++;

	ring[ring_next].len = 0;
	put_mem(&ring[ring_next], payload.data, payload.len);
	ring_user[ring_next] = s->user;
	ring_next = (ring_next + 1) % DUP_RING;
	ring_len += ring_len < DUP_RING;

	if (s->pos == s->nact)
		replace_session(s, clock, true);
}

/* Emit a malformed message for the user of a random active session. */
static void
emit_malformed(int64_t clock)
{
	int			kind = bad_kinds[rng_below(nbad_kinds)];
	int			variant = (int) rng_below(bad_variants[kind]);
	Session    *s = &slots[rng_below(nactive)];
	Event		ev = {0};

	ev.seq = next_seq++;
	ev.ts = kind == BAD_FUTURE_TIMESTAMP ? clock + 48 * MS_PER_HOUR : clock;
	ev.user = s->user;
	ev.product = pick_product();
	ev.page = PG_PRODUCT;
	ev.page_arg = ev.product;
	ev.campaign = s->campaign;
	ev.extra = -1;
	ev.ts_number = kind != BAD_FUTURE_TIMESTAMP && rng_chance(0.10);
	if (kind == BAD_PURCHASE_WITHOUT_ORDER)
	{
		ev.type = EV_PURCHASE;
		ev.page = PG_CHECKOUT;
		ev.qty = 1;
	}
	else if (kind == BAD_WRONG_TYPE || kind == BAD_NEGATIVE_PRICE || kind == BAD_BAD_QUANTITY)
	{
		ev.type = EV_ADD_TO_CART;
		ev.qty = 1 + rng_below(2);
	}
	write_event(&ev, kind, variant);
	emit(payload.data, payload.len, s->user, clock);
	n_bad++;
	n_bad_kind[kind]++;
	n_oversize += kind == BAD_OVERSIZE;
}

/* Shuffle an array of n ids (Fisher-Yates). */
static void
shuffle(int32_t *a, int64_t n)
{
	for (int64_t i = n - 1; i > 0; i--)
	{
		int			j = (int) rng_below((uint32_t) i + 1);
		int32_t		t = a[i];

		a[i] = a[j];
		a[j] = t;
	}
}

/* Seed the generator; set up tables, products, users and the session pool. */
static void
setup(void)
{
	for (int i = 0; i < 4; i++)
		rng_s[i] = mix64(opt_seed + (i + 1) * 0x9E3779B97F4A7C15ULL);
	seed_key = mix64(opt_seed ^ 0x5851F42D4C957F2DULL);
	for (uint32_t i = 0; i < 256; i++)
	{
		uint32_t	c = i;

		for (int j = 0; j < 8; j++)
			c = (c & 1) ? (c >> 1) ^ 0xEDB88320 : c >> 1;
		crc_table[i] = c;
		hexpairs[2 * i] = "0123456789abcdef"[i >> 4];
		hexpairs[2 * i + 1] = "0123456789abcdef"[i & 15];
	}

	prod_cat = malloc(opt_products);
	prod_price = malloc(sizeof(int32_t) * opt_products);
	prod_by_rank = malloc(sizeof(int32_t) * opt_products);
	users = malloc(sizeof(User) * opt_users);
	idle_heap = malloc(sizeof(int32_t) * opt_users);
	new_users = malloc(sizeof(int32_t) * opt_users);
	slots = calloc(opt_concurrency, sizeof(Session));
	part_offset = calloc(opt_partitions, sizeof(int64_t));
	if (!prod_cat || !prod_price || !prod_by_rank || !users || !idle_heap ||
		!new_users || !slots || !part_offset)
		die("out of memory", NULL);

	for (int p = 0; p < opt_products; p++)
	{
		int			c = weighted(category_weight, lengthof(categories), rng_below(100));
		double		u1 = 1 - rng_unit();
		double		u2 = rng_unit();
		double		z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);	/* Box-Muller */
		double		price = fmin(fmax(category_median[c] * exp(0.85 * z), 1.99), 2499.99);
		int64_t		cents = llround(price * 100);

		prod_cat[p] = (uint8_t) c;
		prod_price[p] = (int32_t) (cents - cents % 10 + 9);
		prod_by_rank[p] = p;
	}
	shuffle(prod_by_rank, opt_products);
	for (int u = 0; u < opt_users; u++)
	{
		users[u].last_ts = UNSEEN;
		new_users[u] = u;
	}
	shuffle(new_users, opt_users);
	while (nactive < opt_concurrency)
		start_session(&slots[nactive++], eligible_user(opt_start));
}

/* Monotonic wall-clock time in seconds. */
static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Generate all messages, paced unless --fast. */
static void
generate(void)
{
	double		t0 = now_seconds();
	int64_t		count = opt_fast && opt_duration >= 0 ? (int64_t) ceil(opt_duration * opt_rate) : opt_count;

	for (int64_t i = 0; (count < 0 || i < count) && !stop_requested; i++)
	{
		int64_t		clock = opt_start + (int64_t) floor((double) i * 1000.0 / opt_rate);
		double		now,
					r;

		/* pace: sleep (or serve Kafka) in steps of at most 20 ms */
		while (!opt_fast && (now = now_seconds()) < t0 + i / opt_rate && !stop_requested)
		{
			double		wait = fmin(t0 + i / opt_rate - now, 0.02);

			if (rk)
				rd_kafka_poll(rk, (int) ceil(wait * 1000));
			else
				nanosleep(&(struct timespec) {0, (long) (wait * 1e9)}, NULL);
		}
		if (!opt_fast && opt_duration >= 0 && now_seconds() - t0 >= opt_duration)
			break;

		if (nactive < opt_concurrency)
		{
			int32_t		u = eligible_user(clock);

			if (u >= 0)
				start_session(&slots[nactive++], u);
		}
		r = rng_unit();
		if (r < opt_dup && ring_len > 0)
		{
			int			k = (int) rng_below(ring_len);

			emit(ring[k].data, ring[k].len, ring_user[k], clock);
			n_dup++;
		}
		else if (r >= opt_dup && r < opt_dup + opt_bad)
			emit_malformed(clock);
		else
			emit_valid(clock, r >= opt_dup + opt_bad && r < opt_dup + opt_bad + opt_late);
		if (rk && (i & 1023) == 0)
			rd_kafka_poll(rk, 0);
	}
}

/* Create the Kafka producer, its topic handle and the message headers. */
static void
kafka_open(void)
{
	/*
	 * linger.ms: batches of 100 ms per partition.  librdkafka's mock
	 * cluster (tools/broker) finds a fetch's offset by walking the
	 * partition's list of record batches; with 5 ms most batches held one
	 * message, and at 10 000 events/s over 64 partitions the broker spent
	 * 80 % of a core walking lists of thousands of them.
	 */
	static const char *const settings[][2] = {
		{"linger.ms", "100"}, {"batch.num.messages", "10000"},
		{"queue.buffering.max.kbytes", "2097151"},
		{"queue.buffering.max.messages", "1000000"},
		{"message.max.bytes", "16777216"}, {"acks", "all"},
		{"enable.idempotence", "true"}, {"partitioner", "consistent"}
	};
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		errstr[512];

	if (rd_kafka_conf_set(conf, "bootstrap.servers", opt_brokers, errstr, sizeof(errstr)))
		die("bad Kafka setting", errstr);
	for (int i = 0; i < lengthof(settings); i++)
		if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], errstr, sizeof(errstr)))
			die("bad Kafka setting", errstr);
	for (int i = 0; i < nproducer_opts; i++)
	{
		char	   *kv = strdup(producer_opts[i]);
		char	   *eq = strchr(kv, '=');

		*eq = '\0';
		if (rd_kafka_conf_set(conf, kv, eq + 1, errstr, sizeof(errstr)))
			die("bad --producer-option", errstr);
		free(kv);
	}
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	if ((rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))) == NULL)
		die("cannot create Kafka producer", errstr);
	if ((rkt = rd_kafka_topic_new(rk, opt_topic, NULL)) == NULL)
		die("cannot create topic handle", rd_kafka_err2str(rd_kafka_last_error()));
	if (nheaders > 0)
		headers = rd_kafka_headers_new(nheaders);
	for (int i = 0; i < nheaders; i++)
	{
		const char *eq = strchr(header_kv[i], '=');

		rd_kafka_header_add(headers, header_kv[i], eq - header_kv[i], eq + 1, -1);
	}
}

/* Write the manifest file. */
static void
write_manifest(void)
{
	FILE	   *f = fopen(opt_manifest, "w");

	if (f == NULL)
		die("cannot open manifest", strerror(errno));
	fprintf(f, "messages=%ld\nvalid=%ld\nduplicates=%ld\nmalformed=%ld\n",
			(long) n_messages, (long) n_valid, (long) n_dup, (long) n_bad);
	for (int k = 0; k < NUM_BAD_KINDS; k++)
		fprintf(f, "malformed.%s=%ld\n", bad_kind_names[k], (long) n_bad_kind[k]);
	fprintf(f, "late=%ld\noversize=%ld\nusers_seen=%ld\nsessions=%ld\n"
			"sessions_stretched=%ld\npurchases=%ld\norders=%ld\n",
			(long) n_late, (long) n_oversize, (long) n_users_seen, (long) n_sessions,
			(long) n_stretched, (long) n_type[EV_PURCHASE], (long) n_orders);
	for (int t = 0; t < NUM_EVENT_TYPES; t++)
		fprintf(f, "event_type.%s=%ld\n", event_type_names[t], (long) n_type[t]);
	if (fclose(f) != 0)
		die("cannot write manifest", strerror(errno));
}

/* Parse a number within [lo, hi] or exit. */
static double
parse_num(const char *name, const char *s, double lo, double hi)
{
	char	   *end;
	double		v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
	{
		fprintf(stderr, "eventgen: invalid value for --%s: \"%s\"\n", name, s);
		exit(2);
	}
	return v;
}

/* Parse --start: epoch ms, or ISO-8601 date-time with Z or +-HH[:MM]. */
static int64_t
parse_start(const char *s)
{
	int			y, mo, d, h, mi, sec, n = 0, zh = 0, zm = 0;
	int64_t		ms = 0;
	const char *p;

	if (*s && strspn(s, "0123456789") == strlen(s))
		return (int64_t) parse_num("start", s, 0, 9e15);
	if (sscanf(s, "%4d-%2d-%2d%*1[T ]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n == 0)
		die("invalid --start (want 2026-11-01T00:00:00Z or epoch ms)", s);
	p = s + n;
	if (*p == '.')
		for (int scale = 100; *++p >= '0' && *p <= '9'; scale /= 10)
			ms += (*p - '0') * scale;
	if (*p == 'Z' && p[1] == '\0')
		p++;
	else if ((*p == '+' || *p == '-') &&
			 (sscanf(p + 1, "%2d:%2d%n", &zh, &zm, &n) == 2 ||
			  sscanf(p + 1, "%2d%2d%n", &zh, &zm, &n) == 2 ||
			  sscanf(p + 1, "%2d%n", &zh, &n) == 1) && p[1 + n] == '\0')
	{
		if (*p == '+')
			zh = -zh, zm = -zm;
		p += 1 + n;
	}
	if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		die("invalid --start (want 2026-11-01T00:00:00Z or epoch ms)", s);
	return ((days_from_civil(y, mo, d) * 24 + h + zh) * 60 + mi + zm) * 60000 + sec * 1000 + ms;
}

/* Parse --bad-kinds into bad_kinds[]. */
static void
parse_kinds(char *list)
{
	nbad_kinds = 0;
	for (char *t = strtok(list, ","); t; t = strtok(NULL, ","))
	{
		int			k;

		for (k = 0; k < NUM_BAD_KINDS && strcmp(t, bad_kind_names[k]) != 0; k++)
			;
		if (k == NUM_BAD_KINDS)
			die("unknown malformation kind", t);
		bad_kinds[nbad_kinds++] = k;
	}
	if (nbad_kinds == 0)
		die("--bad-kinds is empty", NULL);
}

/* SIGINT/SIGTERM: stop generating, then finish normally. */
static void
on_signal(int signo)
{
	(void) signo;
	stop_requested = 1;
}

static const char usage[] =
"Usage: eventgen [--seed N] [--count N | --duration SECONDS] [--rate N] [--fast]\n"
"         [--start ISO8601|EPOCH_MS] [--users N] [--products N] [--concurrency K]\n"
"         (--brokers ADDR [--topic NAME] [--header KEY=VALUE]... [--producer-option KEY=VALUE]...\n"
"          | --output FILE|- [--format jsonl|copy] [--topic NAME] [--partitions N])\n"
"         [--dup-share F] [--bad-share F] [--late-share F] [--return-share F] [--bad-kinds K,...]\n"
"         [--oversize-bytes N] [--manifest FILE]\n";

/* Parse the command line into the opt_ variables. */
static void
parse_options(int argc, char **argv)
{
	enum
	{
		O_COUNT, O_USERS, O_PRODUCTS, O_CONC, O_PARTITIONS, O_OVERSIZE,
		O_DURATION, O_RATE, O_DUP, O_BAD, O_LATE, O_RETURN, O_SEED, O_FAST, O_START,
		O_BROKERS, O_TOPIC, O_HEADER, O_PRODUCER_OPTION, O_OUTPUT, O_FORMAT, O_KINDS, O_MANIFEST,
		O_HELP
	};
	static const struct option longopts[] = {
		{"count", 1, NULL, O_COUNT}, {"users", 1, NULL, O_USERS},
		{"products", 1, NULL, O_PRODUCTS}, {"concurrency", 1, NULL, O_CONC},
		{"partitions", 1, NULL, O_PARTITIONS}, {"oversize-bytes", 1, NULL, O_OVERSIZE},
		{"duration", 1, NULL, O_DURATION}, {"rate", 1, NULL, O_RATE},
		{"dup-share", 1, NULL, O_DUP}, {"bad-share", 1, NULL, O_BAD},
		{"late-share", 1, NULL, O_LATE}, {"return-share", 1, NULL, O_RETURN},
		{"seed", 1, NULL, O_SEED},
		{"fast", 0, NULL, O_FAST}, {"start", 1, NULL, O_START},
		{"brokers", 1, NULL, O_BROKERS}, {"topic", 1, NULL, O_TOPIC},
		{"header", 1, NULL, O_HEADER}, {"producer-option", 1, NULL, O_PRODUCER_OPTION}, {"output", 1, NULL, O_OUTPUT},
		{"format", 1, NULL, O_FORMAT}, {"bad-kinds", 1, NULL, O_KINDS},
		{"manifest", 1, NULL, O_MANIFEST}, {"help", 0, NULL, O_HELP},
		{NULL, 0, NULL, 0}
	};
	/* numeric options, in enum order: where they go and their bounds */
	int64_t    *const ints[] = {&opt_count, &opt_users, &opt_products, &opt_concurrency,
	&opt_partitions, &opt_oversize};
	double	   *const reals[] = {&opt_duration, &opt_rate, &opt_dup, &opt_bad, &opt_late, &opt_return};
	static const double bounds[][2] = {
		{0, 1e15}, {1, 1e8}, {1, 1e7}, {1, 1e8}, {1, 1e6}, {0, 1e9},
		{0, 1e9}, {0.001, 1e9}, {0, 1}, {0, 1}, {0, 1}, {0, 1}
	};
	bool		have_start = false;
	char	   *end;
	int			c;

	for (int k = 0; k < NUM_BAD_KINDS; k++)
		bad_kinds[nbad_kinds++] = k;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		if (c >= O_COUNT && c <= O_RETURN)
		{
			double		v = parse_num(longopts[c].name, optarg, bounds[c][0], bounds[c][1]);

			if (c <= O_OVERSIZE)
				*ints[c] = (int64_t) v;
			else
				*reals[c - O_DURATION] = v;
		}
		else if (c == O_SEED)
		{
			errno = 0;
			opt_seed = strtoull(optarg, &end, 10);
			if (errno || end == optarg || *end || optarg[0] == '-')
				die("invalid --seed", optarg);
		}
		else if (c == O_FAST)
			opt_fast = true;
		else if (c == O_START)
			opt_start = parse_start(optarg), have_start = true;
		else if (c == O_BROKERS)
			opt_brokers = optarg;
		else if (c == O_TOPIC)
			opt_topic = optarg;
		else if (c == O_PRODUCER_OPTION && nproducer_opts < MAX_HEADERS && strchr(optarg, '=') > optarg)
			producer_opts[nproducer_opts++] = optarg;
		else if (c == O_HEADER && nheaders < MAX_HEADERS && strchr(optarg, '=') > optarg)
			header_kv[nheaders++] = optarg;
		else if (c == O_OUTPUT)
			opt_output = optarg;
		else if (c == O_FORMAT && (strcmp(optarg, "jsonl") == 0 || strcmp(optarg, "copy") == 0))
			opt_copy = strcmp(optarg, "copy") == 0;
		else if (c == O_KINDS)
			parse_kinds(optarg);
		else if (c == O_MANIFEST)
			opt_manifest = optarg;
		else
		{
			fputs(usage, c == O_HELP ? stdout : stderr);
			exit(c == O_HELP ? 0 : 2);
		}
	}
	if (optind < argc)
		die("unexpected argument", argv[optind]);
	if ((opt_brokers != NULL) == (opt_output != NULL))
		die("give exactly one of --brokers and --output", NULL);
	if (opt_count >= 0 && opt_duration >= 0)
		die("give at most one of --count and --duration", NULL);
	if (opt_count < 0 && opt_duration < 0)
		opt_count = 1000;
	if (*opt_topic == '\0' || strspn(opt_topic, "abcdefghijklmnopqrstuvwxyz"
									  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != strlen(opt_topic))
		die("invalid topic name", opt_topic);
	if (opt_dup + opt_bad + opt_late > 1)
		die("--dup-share + --bad-share + --late-share exceeds 1", NULL);
	if (!have_start)
	{
		struct timespec wall;

		clock_gettime(CLOCK_REALTIME, &wall);
		opt_start = (int64_t) wall.tv_sec * 1000 + wall.tv_nsec / 1000000;
	}
	if (opt_concurrency == 0)
		opt_concurrency = opt_users / 10 < 2000 ? opt_users / 10 : 2000;
	opt_concurrency = opt_concurrency < 1 ? 1 : opt_concurrency > opt_users ? opt_users : opt_concurrency;
}

/* Generate, flush, write the manifest and a summary; exit 1 on lost messages. */
int
main(int argc, char **argv)
{
	double		t0,
				secs;

	parse_options(argc, argv);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	setup();
	if (opt_brokers)
		kafka_open();
	else
	{
		out = strcmp(opt_output, "-") == 0 ? stdout : fopen(opt_output, "w");
		if (out == NULL)
			die("cannot open output", strerror(errno));
		setvbuf(out, NULL, _IOFBF, 1 << 20);
	}

	t0 = now_seconds();
	generate();
	if (rk)
		while (rd_kafka_flush(rk, 2000) == RD_KAFKA_RESP_ERR__TIMED_OUT)
			fprintf(stderr, "eventgen: waiting for %d messages to be delivered\n",
					rd_kafka_outq_len(rk));
	else if (fflush(out) != 0 || ferror(out) || (out != stdout && fclose(out) != 0))
		die("cannot write output", strerror(errno));
	secs = now_seconds() - t0;
	if (opt_manifest)
		write_manifest();

	if (rk)
	{
		rd_kafka_topic_destroy(rkt);
		rd_kafka_destroy(rk);
	}

	/* the summary comes last: scripts show it with tail -n1 */
	if (n_stretched > 0)
		fprintf(stderr, "eventgen: note: %ld sessions stretched for lack of idle users "
				"(more --users or a lower --rate avoid it)\n", (long) n_stretched);
	if (delivery_failed > 0)
		fprintf(stderr, "eventgen: %ld of %ld messages were not delivered (%s)\n",
				(long) delivery_failed, (long) n_messages, first_error);
	fprintf(stderr, "eventgen: %ld messages (%ld valid, %ld duplicates, %ld malformed, "
			"%ld late), %ld users, %ld sessions, %.2f s, %.0f msg/s%s\n",
			(long) n_messages, (long) n_valid, (long) n_dup, (long) n_bad,
			(long) n_late, (long) n_users_seen, (long) n_sessions, secs,
			secs > 0 ? n_messages / secs : 0.0,
			delivery_failed > 0 ? ", NOT ALL DELIVERED" : "");
	return delivery_failed > 0 ? 1 : 0;
}
