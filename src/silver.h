/*-------------------------------------------------------------------------
 *
 * silver.h
 *	  The fields of the event format and the name maps of the parser, shared
 *	  by silver.c (the parser) and aliases.c (the settings that build the
 *	  maps).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CLICKSTREAM_SILVER_H
#define CLICKSTREAM_SILVER_H

/* Longest identifier-like string value accepted (indexes hold these). */
#define SILVER_MAX_ID_BYTES 512
/* Most names a setting may give (a map is looked up by hash: any size is fast). */
#define SILVER_MAX_NAMES 1000
/* Most path prefixes (dots in all the aliases) field aliases may have. */
#define SILVER_MAX_PREFIXES 1000

/* The known keys of the event format, in the order of silver_fields. */
typedef enum SilverField
{
	F_EVENT_ID, F_EVENT_TYPE, F_USER_ID, F_TS, F_PRODUCT_ID, F_CATEGORY,
	F_PRICE, F_QUANTITY, F_ORDER_ID, F_PAGE_URL, F_REFERRER, F_UTM_SOURCE,
	F_UTM_MEDIUM, F_UTM_CAMPAIGN, F_DEVICE, F_COUNTRY, NUM_FIELDS
} SilverField;

/* A field of the event format. */
typedef struct SilverFieldDef
{
	const char *name;
	int			namelen;
	int			column;			/* text column it fills, or -1 */
	bool		required;
	bool		identifier;		/* bounded by SILVER_MAX_ID_BYTES */
} SilverFieldDef;

extern const SilverFieldDef silver_fields[NUM_FIELDS];

/*
 * A name of a map: a key of the payload naming a field (field aliases), or
 * an event type naming a canonical one (event type aliases).  A field alias
 * with a dot is also a path into nested objects (properties.price): each of
 * its prefixes before a dot is an entry marked prefix, of no field (-1)
 * unless it is also a name.
 */
typedef struct SilverMapEntry
{
	const char *name;
	int			len;
	int			field;			/* field aliases: the field it names */
	int			rank;			/* 0: the canonical name, then the aliases */
	bool		prefix;			/* field aliases: a path alias starts with name. */
	const char *value;			/* event type aliases: the canonical type */
	int			value_len;
} SilverMapEntry;

/*
 * A map of names, built once by a setting's check hook in one malloc'd
 * block: entries, an open-addressing hash table of them, their text.
 */
typedef struct SilverMap
{
	int			nentries;
	uint32		mask;			/* number of slots - 1 (a power of 2) */
	int16	   *slots;			/* entry index + 1; 0 for a free slot */
	SilverMapEntry *entries;
	const char *aliases_of[NUM_FIELDS]; /* "a, b" for a field's aliases */
} SilverMap;

/* The fields a missing event_id is derived from, in order. */
typedef struct SilverIdFields
{
	int			nfields;
	int			fields[NUM_FIELDS];
} SilverIdFields;

/* aliases.c: the maps in force (never NULL once GucInit has run) */
extern const SilverMap *silver_field_map;
extern uint32 silver_field_map_generation;	/* counts its changes */
extern const SilverMap *silver_type_map;	/* NULL: no event type alias */
extern const SilverIdFields *silver_id_fields;	/* NULL: event_id required */

/* Hash of a name (FNV-1a). */
static inline uint32
SilverHash(const char *s, int len)
{
	uint32		h = 2166136261u;

	for (int i = 0; i < len; i++)
		h = (h ^ (unsigned char) s[i]) * 16777619u;
	return h;
}

/* The entry of map named by the len bytes at s, or NULL. */
static inline const SilverMapEntry *
SilverMapFind(const SilverMap *map, const char *s, int len)
{
	for (uint32 i = SilverHash(s, len) & map->mask;; i = (i + 1) & map->mask)
	{
		int			e = map->slots[i];
		const SilverMapEntry *entry;

		if (e == 0)
			return NULL;
		entry = &map->entries[e - 1];
		if (entry->len == len && memcmp(entry->name, s, len) == 0)
			return entry;
	}
}

#endif							/* CLICKSTREAM_SILVER_H */
