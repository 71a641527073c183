/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  Every clickstream.* setting, in one place.
 *
 * Contexts follow meaning: the database and the number of workers are fixed
 * at server start (POSTMASTER); everything the worker can apply on the fly
 * (Kafka connection, batching, pause) is SIGHUP.  The silver settings that
 * shape stored data (time zone, high-value threshold, clock skew, and those
 * that map what producers send onto the event format: aliases, timestamp
 * styles, derived ids, order ids) are SIGHUP too, so that every refresh of a
 * server derives columns the same way; only the size of a refresh step can
 * be changed per session.  The three given as lists are parsed once, by
 * their check hooks, into the maps of aliases.c.  The session rules are
 * SIGHUP for the same reason: clickstream.sessions follows them, and a
 * refresh rebuilds it when they change; so are the thresholds of
 * clickstream.high_interest_low_conversion.  Kafka secrets are read from
 * clickstream.kafka_options_file by kafka.c, never kept in a setting
 * (PostgreSQL logs a changed setting's value).  README.md ("Settings") has
 * the same list as a table.
 *
 * Only the settings C code reads are exported (clickstream.h); the variables
 * of those only SQL reads, through current_setting(), are static here.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include <limits.h>

#include "datatype/timestamp.h"
#include "pgtime.h"
#include "utils/guc.h"

/* Connection to PostgreSQL and Kafka */
char	   *cs_database = NULL;
char	   *cs_brokers = NULL;
char	   *cs_topic = NULL;
char	   *cs_group_id = NULL;
char	   *cs_kafka_options = NULL;
char	   *cs_kafka_options_file = NULL;
int			cs_consumers = 1;
int			cs_start_offset = START_OFFSET_EARLIEST;
bool		cs_enabled = true;

/* Batching and memory */
int			cs_batch_size = 10000;
int			cs_batch_timeout = 500;
int			cs_batch_max_kb = 16384;
int			cs_max_message_bytes = 1048576;
int			cs_fetch_buffer_kb = 4096;
int			cs_max_partitions = 1024;

/* Silver */
char	   *cs_timezone = NULL;
double		cs_high_value_threshold = 500.0;
int			cs_max_clock_skew = 300;
int			cs_timestamp_without_zone = TS_WITHOUT_ZONE_REJECT;
int			cs_epoch_unit = EPOCH_UNIT_MS;
bool		cs_require_order_id = true;

/* Silver, kept as the maps of aliases.c (silver.h) */
static char *cs_field_aliases = NULL;
static char *cs_event_type_aliases = NULL;
static char *cs_event_id_fields = NULL;

/* Silver, read by SQL only (current_setting()): not exported */
static int	cs_refresh_batch_size = 1000000;
static int	cs_refresh_batch_kb = 256 * 1024;
static int	cs_history_retention = 30 * SECS_PER_DAY;

/* Gold: sessions, read by SQL only */
static int	cs_session_timeout = 30 * SECS_PER_MINUTE;
static int	cs_session_max_duration = SECS_PER_DAY;
static bool cs_session_split_at_midnight = false;
static bool cs_session_split_on_campaign = false;

/* Gold: funnels, read by SQL only */
static int	cs_interest_min_views = 100;
static int	cs_interest_min_carts = 20;
static double cs_interest_max_conversion = 0.01;

static const struct config_enum_entry start_offset_options[] = {
	{"earliest", START_OFFSET_EARLIEST, false},
	{"latest", START_OFFSET_LATEST, false},
	{NULL, 0, false}
};

static const struct config_enum_entry timestamp_without_zone_options[] = {
	{"reject", TS_WITHOUT_ZONE_REJECT, false},
	{"utc", TS_WITHOUT_ZONE_UTC, false},
	{"local", TS_WITHOUT_ZONE_LOCAL, false},
	{NULL, 0, false}
};

static const struct config_enum_entry epoch_unit_options[] = {
	{"ms", EPOCH_UNIT_MS, false},
	{"s", EPOCH_UNIT_S, false},
	{"us", EPOCH_UNIT_US, false},
	{NULL, 0, false}
};

/*
 * Zone names of tzdata that are also time zone abbreviations in a file of
 * PostgreSQL's share/timezonesets with another meaning at some time (the
 * others, GMT, UCT, UTC and Zulu, are +0 in both): SQL's AT TIME ZONE looks
 * a name up as an abbreviation first, a fixed offset (CET is +1 all year,
 * EST is +10 under timezone_abbreviations = 'Australia'), while silver
 * derives event_date through the zone (CET has summer time).
 */
static const char *const guc_abbreviation_zones[] = {
	"CET", "EET", "MET", "WET", "EST", "MST", "HST"
};

/*
 * Accept only time zone names that PostgreSQL knows and that SQL's AT TIME
 * ZONE reads as the same zone.
 */
static bool
GucCheckTimezone(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || pg_tzset(*newval) == NULL)
	{
		GUC_check_errdetail("\"%s\" is not a known time zone name.", *newval ? *newval : "");
		GUC_check_errhint("Use a name from pg_timezone_names, such as UTC or Europe/Paris.");
		return false;
	}
	for (int i = 0; i < lengthof(guc_abbreviation_zones); i++)
	{
		if (pg_strcasecmp(*newval, guc_abbreviation_zones[i]) == 0)
		{
			GUC_check_errdetail("\"%s\" is also a time zone abbreviation, which SQL reads as a fixed offset (AT TIME ZONE): the days of gold would not be those of silver.",
								*newval);
			GUC_check_errhint("Use a region name, such as Europe/Paris (with summer time), or Etc/GMT-1 for a fixed offset of +1.");
			return false;
		}
	}
	return true;
}

/* clickstream.field_aliases: parsed into the parser's map of field names. */
static bool
GucCheckFieldAliases(char **newval, void **extra, GucSource source)
{
	if (AliasesCheckFields(*newval, extra))
		return true;
	if (GUC_check_errhint_string == NULL)
		GUC_check_errhint("Write canonical=alias|alias, canonical=alias, for example ts=event_time|timestamp, user_id=userId.");
	return false;
}

/* Make the parsed clickstream.field_aliases the parser's. */
static void
GucAssignFieldAliases(const char *newval, void *extra)
{
	AliasesAssignFields(extra);
}

/* clickstream.event_type_aliases: parsed into a map of event types. */
static bool
GucCheckEventTypeAliases(char **newval, void **extra, GucSource source)
{
	if (AliasesCheckEventTypes(*newval, extra))
		return true;
	if (GUC_check_errhint_string == NULL)
		GUC_check_errhint("Write canonical=alias|alias, canonical=alias, for example page_view=view|pageview, add_to_cart=cart.");
	return false;
}

/* Make the parsed clickstream.event_type_aliases the parser's. */
static void
GucAssignEventTypeAliases(const char *newval, void *extra)
{
	AliasesAssignEventTypes(extra);
}

/* clickstream.event_id_fields: parsed into a list of fields. */
static bool
GucCheckEventIdFields(char **newval, void **extra, GucSource source)
{
	if (AliasesCheckIdFields(*newval, extra))
		return true;
	if (GUC_check_errhint_string == NULL)
		GUC_check_errhint("Write field names separated by commas, for example user_id,ts,event_type,product_id.");
	return false;
}

/* Make the parsed clickstream.event_id_fields the parser's. */
static void
GucAssignEventIdFields(const char *newval, void *extra)
{
	AliasesAssignIdFields(extra);
}

/* Define every clickstream.* setting; called once from _PG_init. */
void
GucInit(void)
{
	DefineCustomStringVariable("clickstream.database",
							   "Database the ingestion workers connect to.",
							   "CREATE EXTENSION clickstream must be run in this database.",
							   &cs_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.consumers",
							"Number of ingestion workers sharing the topic's partitions.",
							"Each worker is one member of the consumer group; 0 starts none.",
							&cs_consumers,
							1, 0, CLICKSTREAM_MAX_CONSUMERS,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.max_partitions",
							"Number of partitions the shared-memory status can track.",
							NULL,
							&cs_max_partitions,
							1024, 16, 65536,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("clickstream.brokers",
							   "Kafka bootstrap servers (host:port,...).",
							   NULL,
							   &cs_brokers,
							   "localhost:9092",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("clickstream.topic",
							   "Kafka topic to consume.",
							   NULL,
							   &cs_topic,
							   "clickstream",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("clickstream.group_id",
							   "Kafka consumer group of the ingestion workers.",
							   "Offsets are committed to this group after each PostgreSQL commit, for lag tools; the worker itself resumes from the database.",
							   &cs_group_id,
							   "clickstream",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("clickstream.kafka_options",
							   "Extra librdkafka settings as key=value,key=value.",
							   "Passed to librdkafka as they are (security.protocol, sasl.*, ssl.*, ...); they override the extension's own defaults.",
							   &cs_kafka_options,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("clickstream.kafka_options_file",
							   "A librdkafka properties file (key=value lines) with more settings, such as secrets.",
							   "Read when the consumer is created and on every reload; refused when group or others may access it. Its lines override clickstream.kafka_options; its contents are never logged.",
							   &cs_kafka_options_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomEnumVariable("clickstream.start_offset",
							 "Where to start a partition that has no stored position.",
							 "earliest reads the whole retained partition, latest only new messages.",
							 &cs_start_offset,
							 START_OFFSET_EARLIEST,
							 start_offset_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("clickstream.enabled",
							 "Consume from Kafka; off pauses ingestion and keeps the position.",
							 NULL,
							 &cs_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.batch_size",
							"A batch is written once it holds this many messages.",
							NULL,
							&cs_batch_size,
							10000, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.batch_timeout",
							"A batch is written at the latest this long after its first message.",
							NULL,
							&cs_batch_timeout,
							500, 1, 3600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.batch_max_size",
							"A batch is written once its messages hold this much data.",
							NULL,
							&cs_batch_max_kb,
							16384, 64, 524288,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.max_message_bytes",
							"Messages larger than this go to clickstream.dead_letters instead of bronze.",
							"Only the first max_message_bytes bytes of such a message are kept there.",
							&cs_max_message_bytes,
							1048576, 1, 256 * 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.fetch_buffer",
							"Upper bound of librdkafka's prefetched messages per worker.",
							"Sets queued.max.messages.kbytes; a fetch response is at most half of it.",
							&cs_fetch_buffer_kb,
							4096, 1024, 2097152,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomStringVariable("clickstream.timezone",
							   "Time zone in which silver derives event_date and event_hour.",
							   "Also the time zone of daily gold tables and of the midnight session split.",
							   &cs_timezone,
							   "UTC",
							   PGC_SIGHUP,
							   0,
							   GucCheckTimezone, NULL, NULL);

	DefineCustomRealVariable("clickstream.high_value_threshold",
							 "Unit price above which a silver event is flagged is_high_value.",
							 NULL,
							 &cs_high_value_threshold,
							 500.0, 0.0, 1e15,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.max_clock_skew",
							"How far in the future an event timestamp may be before silver rejects it.",
							"Measured against the start of the refresh transaction.",
							&cs_max_clock_skew,
							300, 0, PG_INT32_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("clickstream.field_aliases",
							   "Other names of the event format's fields, as canonical=alias|alias, canonical=alias.",
							   "The canonical name, when present, wins over its aliases; else the first alias listed that is present.",
							   &cs_field_aliases,
							   "",
							   PGC_SIGHUP,
							   0,
							   GucCheckFieldAliases, GucAssignFieldAliases, NULL);

	DefineCustomStringVariable("clickstream.event_type_aliases",
							   "Other names of event types, as canonical=alias|alias, canonical=alias.",
							   "Silver stores the canonical event type.",
							   &cs_event_type_aliases,
							   "",
							   PGC_SIGHUP,
							   0,
							   GucCheckEventTypeAliases, GucAssignEventTypeAliases, NULL);

	DefineCustomEnumVariable("clickstream.timestamp_without_zone",
							 "How silver reads a ts string without a time zone.",
							 "reject refuses it, utc reads it as UTC, local as the time in clickstream.timezone.",
							 &cs_timestamp_without_zone,
							 TS_WITHOUT_ZONE_REJECT,
							 timestamp_without_zone_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomEnumVariable("clickstream.epoch_unit",
							 "Unit of a ts given as a number: ms, s or us since 1970-01-01 UTC.",
							 NULL,
							 &cs_epoch_unit,
							 EPOCH_UNIT_MS,
							 epoch_unit_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("clickstream.event_id_fields",
							   "Fields from which silver derives the event_id of an event that has none.",
							   "Comma-separated field names, such as user_id,ts,event_type,product_id; empty: event_id is required.",
							   &cs_event_id_fields,
							   "",
							   PGC_SIGHUP,
							   0,
							   GucCheckEventIdFields, GucAssignEventIdFields, NULL);

	DefineCustomBoolVariable("clickstream.require_order_id",
							 "Whether silver refuses a purchase without an order_id.",
							 "off accepts it; the order marts count it as an order of its own.",
							 &cs_require_order_id,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.refresh_batch_size",
							"Bronze rows that one step (one transaction) of clickstream.refresh() promotes at most.",
							"A refresh repeats steps until bronze is drained.",
							&cs_refresh_batch_size,
							1000000, 1000, PG_INT32_MAX,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.refresh_batch_bytes",
							"Payload bytes that one step of clickstream.refresh() promotes at most.",
							"A step stops at refresh_batch_size rows or at this many payload bytes, whichever comes first; it always takes at least one row.",
							&cs_refresh_batch_kb,
							256 * 1024, 1, PG_INT32_MAX,
							PGC_USERSET,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.history_retention",
							"How long refresh_history, touched and quality_results rows are kept.",
							"Older rows are deleted by clickstream.refresh().",
							&cs_history_retention,
							30 * SECS_PER_DAY, 3600, PG_INT32_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.session_timeout",
							"Inactivity after which a user's next event starts a new session.",
							"A gap exactly equal to it continues the session. Default of clickstream.sessionize() and the rule of clickstream.sessions.",
							&cs_session_timeout,
							30 * SECS_PER_MINUTE, 1, PG_INT32_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.session_max_duration",
							"Longest session: an event later than this after the session's first event starts a new one.",
							"Default of clickstream.sessionize() and the rule of clickstream.sessions.",
							&cs_session_max_duration,
							SECS_PER_DAY, 1, PG_INT32_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("clickstream.session_split_at_midnight",
							 "Whether sessions end at midnight in clickstream.timezone.",
							 "Default of clickstream.sessionize() and the rule of clickstream.sessions.",
							 &cs_session_split_at_midnight,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("clickstream.session_split_on_campaign",
							 "Whether an event with another campaign (utm_source, utm_campaign) than its session's starts a new session.",
							 "Default of clickstream.sessionize() and the rule of clickstream.sessions.",
							 &cs_session_split_on_campaign,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.interest_min_views",
							"Sessions viewing a product in a day from which it counts as of high interest.",
							"clickstream.high_interest_low_conversion lists a product and day when at least this many sessions reached step 1 of the funnel with it (or clickstream.interest_min_carts step 2), and its conversion is below clickstream.interest_max_conversion.",
							&cs_interest_min_views,
							100, 1, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("clickstream.interest_min_carts",
							"Sessions carting a product in a day from which it counts as of high interest.",
							"Sessions that reached step 2 of the funnel with the product; see clickstream.interest_min_views.",
							&cs_interest_min_carts,
							20, 1, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomRealVariable("clickstream.interest_max_conversion",
							 "Conversion below which a product of high interest counts as converting poorly.",
							 "Sessions that reached the last step of the funnel with the product, divided by those that reached step 1; clickstream.high_interest_low_conversion lists the product and day when it is below this.",
							 &cs_interest_max_conversion,
							 0.01, 0.0, 1.0,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("clickstream");
}
