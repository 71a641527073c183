/*-------------------------------------------------------------------------
 *
 * aliases.c
 *	  The settings that map what producers send onto the event format:
 *	  clickstream.field_aliases, clickstream.event_type_aliases and
 *	  clickstream.event_id_fields.
 *
 * Each is parsed once, by its check hook (guc.c), into one malloc'd block
 * that the GUC machinery keeps as the setting's "extra" and frees; the assign
 * hook makes it the map the parser (silver.c) reads.  So the parser does no
 * string work per row beyond hashing the names it meets, and a bad value is
 * refused where it is set, with a message naming the setting (the reload
 * keeps the previous value).
 *
 * Syntax: canonical=alias|alias, canonical=alias (spaces around names are
 * ignored); event_id_fields is a comma-separated list of field names.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "utils/guc.h"

#include "silver.h"

const SilverMap *silver_field_map = NULL;
uint32		silver_field_map_generation = 0;
const SilverMap *silver_type_map = NULL;
const SilverIdFields *silver_id_fields = NULL;

/* One item of a setting: canonical=alias|alias. */
typedef struct AliasItem
{
	char	   *name;
	int			naliases;
	char	  **aliases;
} AliasItem;

/* Trim spaces at both ends of s, in place. */
static char *
AliasesTrim(char *s)
{
	char	   *end;

	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	return s;
}

/* Check a name's length; sets the error detail when it is too long. */
static bool
AliasesNameLength(const char *name)
{
	if (strlen(name) > SILVER_MAX_ID_BYTES)
	{
		GUC_check_errdetail("A name is longer than %d bytes.", SILVER_MAX_ID_BYTES);
		return false;
	}
	return true;
}

/*
 * Split value into items canonical=alias|alias (empty items are skipped).
 * Returns the number of items, or -1 with the error detail set.
 */
static int
AliasesParseItems(const char *value, AliasItem **items)
{
	char	   *copy = pstrdup(value);
	int			n = 0;
	int			cap = 8;
	int			names = 0;
	char	   *item = copy;

	*items = palloc(sizeof(AliasItem) * cap);
	while (item != NULL)
	{
		char	   *next = strchr(item, ',');
		char	   *eq;
		char	   *alias;
		AliasItem  *it;

		if (next != NULL)
			*next++ = '\0';
		item = AliasesTrim(item);
		if (*item == '\0')
		{
			item = next;
			continue;
		}
		eq = strchr(item, '=');
		if (eq == NULL)
		{
			GUC_check_errdetail("Entry \"%s\" has no \"=\".", item);
			return -1;
		}
		*eq = '\0';
		if (n == cap)
		{
			cap *= 2;
			*items = repalloc(*items, sizeof(AliasItem) * cap);
		}
		it = &(*items)[n++];
		it->name = AliasesTrim(item);
		if (*it->name == '\0')
		{
			GUC_check_errdetail("An entry has no name before \"=\".");
			return -1;
		}
		if (!AliasesNameLength(it->name))
			return -1;
		it->naliases = 1;
		for (char *p = eq + 1; *p; p++)
			it->naliases += (*p == '|');
		it->aliases = palloc(sizeof(char *) * it->naliases);
		alias = eq + 1;
		for (int i = 0; i < it->naliases; i++)
		{
			char	   *bar = strchr(alias, '|');

			if (bar != NULL)
				*bar = '\0';
			it->aliases[i] = AliasesTrim(alias);
			if (*it->aliases[i] == '\0')
			{
				GUC_check_errdetail("Entry \"%s\" has an empty alias.", it->name);
				return -1;
			}
			if (!AliasesNameLength(it->aliases[i]))
				return -1;
			if (bar != NULL)
				alias = bar + 1;
		}
		names += it->naliases + 1;
		if (names > SILVER_MAX_NAMES)
		{
			GUC_check_errdetail("More than %d names.", SILVER_MAX_NAMES);
			return -1;
		}
		item = next;
	}
	return n;
}

/* The field of the event format called name, or -1. */
static int
AliasesField(const char *name)
{
	for (int f = 0; f < NUM_FIELDS; f++)
		if (strcmp(silver_fields[f].name, name) == 0)
			return f;
	return -1;
}

/* The hint listing the fields of the event format. */
static void
AliasesHintFields(void)
{
	GUC_check_errhint("The fields are event_id, event_type, user_id, ts, product_id, category, price, quantity, order_id, page_url, referrer, utm_source, utm_medium, utm_campaign, device and country.");
}

/*
 * Lay a map of n entries out in one malloc'd block (with strbytes bytes for
 * the names), slots and entries pointing into it; NULL when out of memory.
 */
static SilverMap *
AliasesMapAlloc(int n, Size strbytes, char **strs)
{
	uint32		nslots = 64;
	Size		size;
	SilverMap  *map;

	while (nslots < (uint32) n * 2)
		nslots *= 2;
	size = MAXALIGN(sizeof(SilverMap)) + MAXALIGN(sizeof(SilverMapEntry) * Max(n, 1)) +
		MAXALIGN(sizeof(int16) * nslots) + strbytes;
	map = CsGucMalloc(size);
	if (map == NULL)
	{
		GUC_check_errdetail("Out of memory.");
		return NULL;
	}
	memset(map, 0, size);
	map->mask = nslots - 1;
	map->entries = (SilverMapEntry *) ((char *) map + MAXALIGN(sizeof(SilverMap)));
	map->slots = (int16 *) ((char *) map->entries + MAXALIGN(sizeof(SilverMapEntry) * Max(n, 1)));
	*strs = (char *) map->slots + MAXALIGN(sizeof(int16) * nslots);
	return map;
}

/* Copy the len bytes of s to *strs (NUL-terminated); returns the copy. */
static const char *
AliasesCopy(char **strs, const char *s, int len)
{
	char	   *copy = *strs;

	memcpy(copy, s, len);
	copy[len] = '\0';
	*strs += len + 1;
	return copy;
}

/* Add an entry to map and its hash table; false if the name is there already. */
static bool
AliasesMapAdd(SilverMap *map, const char *name, int len, int field, int rank,
			  const char *value, int value_len)
{
	uint32		i;
	SilverMapEntry *entry;

	if (SilverMapFind(map, name, len) != NULL)
		return false;
	entry = &map->entries[map->nentries++];
	entry->name = name;
	entry->len = len;
	entry->field = field;
	entry->rank = rank;
	entry->value = value;
	entry->value_len = value_len;
	for (i = SilverHash(name, len) & map->mask; map->slots[i] != 0; i = (i + 1) & map->mask)
		;
	map->slots[i] = (int16) map->nentries;
	return true;
}

/*
 * Check hook of clickstream.field_aliases: build the map of every name of
 * the fields, the canonical ones (rank 0) and their aliases (rank 1, 2, ...),
 * and of the prefixes of the aliases that are paths (with a dot).
 */
bool
AliasesCheckFields(const char *value, void **extra)
{
	AliasItem  *items;
	int			nitems = AliasesParseItems(value ? value : "", &items);
	int			n = NUM_FIELDS;
	Size		strbytes = 0;
	int			given[NUM_FIELDS];
	int			dots = 0;
	SilverMap  *map;
	char	   *strs;

	if (nitems < 0)
		return false;
	for (int f = 0; f < NUM_FIELDS; f++)
	{
		given[f] = -1;
		strbytes += silver_fields[f].namelen + 1;
	}
	for (int i = 0; i < nitems; i++)
	{
		int			f = AliasesField(items[i].name);

		if (f < 0)
		{
			GUC_check_errdetail("\"%s\" is not a field of the event format.", items[i].name);
			AliasesHintFields();
			return false;
		}
		if (given[f] >= 0)
		{
			GUC_check_errdetail("Field \"%s\" is listed twice.", items[i].name);
			GUC_check_errhint("List all its aliases in one entry: %s=a|b.", items[i].name);
			return false;
		}
		given[f] = i;
		for (int a = 0; a < items[i].naliases; a++)
		{
			if (AliasesField(items[i].aliases[a]) >= 0)
			{
				GUC_check_errdetail("Alias \"%s\" is itself a field of the event format.",
									items[i].aliases[a]);
				GUC_check_errhint("A field's own name always names it; an alias must be another name.");
				return false;
			}
			/* the name, and its place in the field's list of aliases */
			strbytes += 2 * (strlen(items[i].aliases[a]) + 2);
			n++;
			/* a path: its prefixes before each dot */
			for (const char *p = items[i].aliases[a]; *p; p++)
				if (*p == '.')
				{
					strbytes += p - items[i].aliases[a] + 1;
					dots++;
				}
		}
	}
	if (dots > SILVER_MAX_PREFIXES)
	{
		GUC_check_errdetail("The aliases have more than %d dots in all.", SILVER_MAX_PREFIXES);
		return false;
	}
	n += dots;

	map = AliasesMapAlloc(n, strbytes, &strs);
	if (map == NULL)
		return false;
	for (int f = 0; f < NUM_FIELDS; f++)
		AliasesMapAdd(map, AliasesCopy(&strs, silver_fields[f].name, silver_fields[f].namelen),
					  silver_fields[f].namelen, f, 0, NULL, 0);
	for (int f = 0; f < NUM_FIELDS; f++)
	{
		AliasItem  *it;
		char	   *list;

		if (given[f] < 0)
			continue;
		it = &items[given[f]];
		for (int a = 0; a < it->naliases; a++)
		{
			int			len = strlen(it->aliases[a]);

			if (!AliasesMapAdd(map, AliasesCopy(&strs, it->aliases[a], len), len, f, a + 1, NULL, 0))
			{
				GUC_check_errdetail("Alias \"%s\" is listed twice.", it->aliases[a]);
				GUC_check_errhint("An alias names one field, once.");
				free(map);
				return false;
			}
		}
		/* "a, b": for the message of a missing field */
		list = strs;
		for (int a = 0; a < it->naliases; a++)
		{
			if (a > 0)
			{
				strcpy(strs, ", ");
				strs += 2;
			}
			strcpy(strs, it->aliases[a]);
			strs += strlen(it->aliases[a]);
		}
		*strs++ = '\0';
		map->aliases_of[f] = list;
	}

	/* the prefixes of the paths, once each, after every name */
	for (int f = 0; f < NUM_FIELDS; f++)
	{
		if (given[f] < 0)
			continue;
		for (int a = 0; a < items[given[f]].naliases; a++)
		{
			const char *alias = items[given[f]].aliases[a];

			for (const char *p = alias; *p; p++)
			{
				const SilverMapEntry *found;

				if (*p != '.')
					continue;
				found = SilverMapFind(map, alias, p - alias);
				if (found == NULL)
				{
					AliasesMapAdd(map, AliasesCopy(&strs, alias, p - alias), p - alias, -1, 0, NULL, 0);
					found = &map->entries[map->nentries - 1];
				}
				map->entries[found - map->entries].prefix = true;
			}
		}
	}
	*extra = map;
	return true;
}

/* Assign hook of clickstream.field_aliases. */
void
AliasesAssignFields(void *extra)
{
	silver_field_map = extra;
	silver_field_map_generation++;
}

/*
 * Check hook of clickstream.event_type_aliases: a map from each alias to
 * its canonical event type; no map when the setting is empty.
 */
bool
AliasesCheckEventTypes(const char *value, void **extra)
{
	AliasItem  *items;
	int			nitems = AliasesParseItems(value ? value : "", &items);
	int			n = 0;
	Size		strbytes = 0;
	SilverMap  *map;
	char	   *strs;

	if (nitems < 0)
		return false;
	if (nitems == 0)
	{
		*extra = NULL;
		return true;
	}
	for (int i = 0; i < nitems; i++)
	{
		strbytes += strlen(items[i].name) + 1;
		for (int j = 0; j < i; j++)
			if (strcmp(items[i].name, items[j].name) == 0)
			{
				GUC_check_errdetail("Event type \"%s\" is listed twice.", items[i].name);
				GUC_check_errhint("List all its aliases in one entry: %s=a|b.", items[i].name);
				return false;
			}
		for (int a = 0; a < items[i].naliases; a++)
		{
			for (int j = 0; j < nitems; j++)
				if (strcmp(items[i].aliases[a], items[j].name) == 0)
				{
					GUC_check_errdetail("Alias \"%s\" is itself an event type of the setting.",
										items[i].aliases[a]);
					GUC_check_errhint("Aliases are not followed in chains: give each alias its final event type.");
					return false;
				}
			strbytes += strlen(items[i].aliases[a]) + 1;
			n++;
		}
	}

	map = AliasesMapAlloc(n, strbytes, &strs);
	if (map == NULL)
		return false;
	for (int i = 0; i < nitems; i++)
	{
		int			len = strlen(items[i].name);
		const char *canonical = AliasesCopy(&strs, items[i].name, len);

		for (int a = 0; a < items[i].naliases; a++)
		{
			int			alen = strlen(items[i].aliases[a]);

			if (!AliasesMapAdd(map, AliasesCopy(&strs, items[i].aliases[a], alen), alen,
							   F_EVENT_TYPE, a + 1, canonical, len))
			{
				GUC_check_errdetail("Alias \"%s\" is listed twice.", items[i].aliases[a]);
				GUC_check_errhint("An alias stands for one event type, once.");
				free(map);
				return false;
			}
		}
	}
	*extra = map;
	return true;
}

/* Assign hook of clickstream.event_type_aliases. */
void
AliasesAssignEventTypes(void *extra)
{
	silver_type_map = extra;
}

/*
 * Check hook of clickstream.event_id_fields: the fields, in order, that a
 * missing event_id is derived from; none when the setting is empty.
 */
bool
AliasesCheckIdFields(const char *value, void **extra)
{
	char	   *copy = pstrdup(value ? value : "");
	SilverIdFields fields;
	SilverIdFields *result;
	char	   *item = copy;

	fields.nfields = 0;
	while (item != NULL)
	{
		char	   *next = strchr(item, ',');
		int			f;

		if (next != NULL)
			*next++ = '\0';
		item = AliasesTrim(item);
		if (*item == '\0')
		{
			item = next;
			continue;
		}
		f = AliasesField(item);
		if (f < 0)
		{
			GUC_check_errdetail("\"%s\" is not a field of the event format.", item);
			AliasesHintFields();
			return false;
		}
		if (f == F_EVENT_ID)
		{
			GUC_check_errdetail("event_id cannot be derived from itself.");
			GUC_check_errhint("List the fields that identify an event, such as user_id,ts,event_type,product_id.");
			return false;
		}
		for (int i = 0; i < fields.nfields; i++)
			if (fields.fields[i] == f)
			{
				GUC_check_errdetail("Field \"%s\" is listed twice.", item);
				return false;
			}
		fields.fields[fields.nfields++] = f;
		item = next;
	}
	pfree(copy);
	if (fields.nfields == 0)
	{
		*extra = NULL;
		return true;
	}
	result = CsGucMalloc(sizeof(SilverIdFields));
	if (result == NULL)
	{
		GUC_check_errdetail("Out of memory.");
		return false;
	}
	*result = fields;
	*extra = result;
	return true;
}

/* Assign hook of clickstream.event_id_fields. */
void
AliasesAssignIdFields(void *extra)
{
	silver_id_fields = extra;
}
