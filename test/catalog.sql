-- The catalog of the clickstream extension as sorted text lines, one fact a
-- line, for comparing two databases (test/t/008_update.pl: an updated
-- install against a fresh one).  Covers the extension's member objects and
-- their kinds; columns (position, type, collation, default, NOT NULL,
-- generated) of its tables, views and types; constraints, indexes,
-- triggers, rules and policies of its tables; functions (the md5 of the
-- whole definition: body, arguments, defaults, volatility, strictness,
-- parallel safety, SET options), aggregates, views, sequences and event
-- triggers; comments; owners and ACLs (and pg_init_privs); the tables
-- pg_dump saves and their filters; the rows the extension ships in its
-- configuration tables; and the day partitions of clickstream.events with
-- their indexes and constraints (the day replaced by DAY).
WITH ext AS (
	SELECT e.oid, e.extconfig, e.extcondition, e.extrelocatable, e.extnamespace
	FROM pg_extension e WHERE e.extname = 'clickstream'
),
member AS (
	SELECT d.classid, d.objid, d.objsubid
	FROM pg_depend d, ext
	WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
rel AS (
	SELECT c.oid, c.oid::regclass::text AS name, c.relkind
	FROM pg_class c JOIN member m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
	UNION ALL
	-- a composite type's relation is not a member itself: its type is
	SELECT t.typrelid, t.typrelid::regclass::text, 'c'
	FROM pg_type t JOIN member m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
	WHERE t.typtype = 'c'
),
part AS (
	-- the day partitions: not members, made at run time by create_partitions
	SELECT i.inhrelid AS oid, c.relname::text AS name, substr(c.relname, 8) AS day
	FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
	WHERE i.inhparent = 'clickstream.events'::regclass
),
fn AS (
	SELECT p.oid, p.oid::regprocedure::text AS name, p.prokind
	FROM pg_proc p JOIN member m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
),
line(l) AS (
	-- the extension itself
	SELECT format('extension|relocatable=%s|schema=%s', extrelocatable, extnamespace::regnamespace) FROM ext
	UNION ALL
	SELECT format('schema|%s|owner=%s|acl=%s|comment=%s', n.nspname, pg_get_userbyid(n.nspowner),
				  n.nspacl, obj_description(n.oid, 'pg_namespace'))
	FROM pg_namespace n WHERE n.nspname = 'clickstream'
	-- every member and its kind
	UNION ALL
	SELECT format('member|%s|%s', o.type, o.identity)
	FROM member m, pg_identify_object(m.classid, m.objid, m.objsubid) o
	-- comments of members (columns below)
	UNION ALL
	SELECT format('comment|%s|%s|%s', o.type, o.identity,
				  obj_description(m.objid, (SELECT c.relname FROM pg_class c WHERE c.oid = m.classid)))
	FROM member m, pg_identify_object(m.classid, m.objid, m.objsubid) o
	-- relations
	UNION ALL
	SELECT format('relation|%s|kind=%s|persistence=%s|options=%s|partkey=%s|owner=%s|acl=%s|rowsecurity=%s',
				  r.name, c.relkind, c.relpersistence, c.reloptions,
				  CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
				  pg_get_userbyid(c.relowner), c.relacl, c.relrowsecurity)
	FROM rel r JOIN pg_class c ON c.oid = r.oid
	UNION ALL
	SELECT format('column|%s|%s|%s|type=%s|collation=%s|notnull=%s|default=%s|generated=%s|identity=%s|acl=%s|comment=%s',
				  r.name, row_number() OVER (PARTITION BY r.oid ORDER BY a.attnum), a.attname,
				  format_type(a.atttypid, a.atttypmod),
				  CASE WHEN a.attcollation <> 0 THEN a.attcollation::regcollation::text END,
				  a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attgenerated, a.attidentity,
				  a.attacl, col_description(r.oid, a.attnum))
	FROM rel r
	JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
	LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
	UNION ALL
	SELECT format('constraint|%s|%s|%s|deferrable=%s|deferred=%s|comment=%s', r.name, k.conname,
				  pg_get_constraintdef(k.oid), k.condeferrable, k.condeferred,
				  obj_description(k.oid, 'pg_constraint'))
	FROM rel r JOIN pg_constraint k ON k.conrelid = r.oid
	UNION ALL
	SELECT format('index|%s|%s|comment=%s', r.name, pg_get_indexdef(i.indexrelid),
				  obj_description(i.indexrelid, 'pg_class'))
	FROM rel r JOIN pg_index i ON i.indrelid = r.oid
	UNION ALL
	SELECT format('trigger|%s|%s|enabled=%s|comment=%s', r.name, pg_get_triggerdef(t.oid), t.tgenabled,
				  obj_description(t.oid, 'pg_trigger'))
	FROM rel r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
	UNION ALL
	SELECT format('rule|%s|%s|%s', r.name, w.rulename, md5(pg_get_ruledef(w.oid)))
	FROM rel r JOIN pg_rewrite w ON w.ev_class = r.oid
	UNION ALL
	SELECT format('policy|%s|%s|%s|%s|%s', r.name, p.polname, p.polcmd,
				  pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
	FROM rel r JOIN pg_policy p ON p.polrelid = r.oid
	UNION ALL
	SELECT format('sequence|%s|%s|start=%s|increment=%s|min=%s|max=%s|cache=%s|cycle=%s|owned_by=%s',
				  r.name, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin,
				  s.seqmax, s.seqcache, s.seqcycle,
				  (SELECT d.refobjid::regclass || '.' || a.attname
				   FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
				   WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
					 AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
	FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid
	-- functions, procedures, aggregates
	UNION ALL
	SELECT format('function|%s|kind=%s|definition=%s|owner=%s|acl=%s', f.name, f.prokind,
				  CASE WHEN f.prokind = 'a' THEN NULL ELSE md5(pg_get_functiondef(f.oid)) END,
				  pg_get_userbyid(p.proowner), p.proacl)
	FROM fn f JOIN pg_proc p ON p.oid = f.oid
	UNION ALL
	SELECT format('aggregate|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', f.name, a.aggkind, a.aggnumdirectargs,
				  a.aggtransfn::regprocedure, a.aggfinalfn, a.aggcombinefn, a.aggserialfn,
				  a.aggdeserialfn, a.aggfinalextra, a.aggtranstype::regtype, a.aggtransspace,
				  a.agginitval)
	FROM fn f JOIN pg_aggregate a ON a.aggfnoid = f.oid
	-- views
	UNION ALL
	SELECT format('view|%s|%s', r.name, md5(pg_get_viewdef(r.oid)))
	FROM rel r WHERE r.relkind IN ('v', 'm')
	-- types
	UNION ALL
	SELECT format('type|%s|type=%s|owner=%s|acl=%s', t.oid::regtype, t.typtype,
				  pg_get_userbyid(t.typowner), t.typacl)
	FROM pg_type t JOIN member m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
	-- event triggers
	UNION ALL
	SELECT format('event_trigger|%s|%s|%s|%s|%s', e.evtname, e.evtevent, e.evttags,
				  e.evtfoid::regprocedure, e.evtenabled)
	FROM pg_event_trigger e JOIN member m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
	-- the privileges the extension's scripts set (what pg_dump compares ACLs with)
	UNION ALL
	SELECT format('init_privs|%s|%s|%s', o.identity, i.privtype, i.initprivs)
	FROM pg_init_privs i
	JOIN member m ON m.classid = i.classoid AND m.objid = i.objoid
	CROSS JOIN pg_identify_object(i.classoid, i.objoid, i.objsubid) o
	-- what pg_dump saves of the extension's tables
	UNION ALL
	SELECT format('dumped|%s|%s', c.oid::regclass, x.cond)
	FROM ext, unnest(ext.extconfig, ext.extcondition) AS x(cfg, cond)
	JOIN pg_class c ON c.oid = x.cfg
	-- the rows the extension ships
	UNION ALL
	SELECT 'shipped|event_types|' || t::text FROM clickstream.event_types t WHERE t.builtin
	UNION ALL
	SELECT 'shipped|quality_checks|' || q.name || '|' || md5(q::text) FROM clickstream.quality_checks q WHERE q.builtin
	UNION ALL
	SELECT 'shipped|funnel_definition|' || f::text FROM clickstream.funnel_definition f
	-- the day partitions
	UNION ALL
	SELECT format('partition|%s|kind=%s|persistence=%s|owner=%s|acl=%s|comment=%s|bound=%s',
				  regexp_replace(p.name, p.day, 'DAY'), c.relkind, c.relpersistence,
				  pg_get_userbyid(c.relowner), c.relacl,
				  replace(obj_description(p.oid, 'pg_class'), to_char(to_date(p.day, 'YYYYMMDD'), 'YYYY-MM-DD'), 'DAY'),
				  replace(replace(pg_get_expr(c.relpartbound, c.oid), to_char(to_date(p.day, 'YYYYMMDD'), 'YYYY-MM-DD'), 'DAY'),
						  to_char(to_date(p.day, 'YYYYMMDD') + 1, 'YYYY-MM-DD'), 'DAY+1'))
	FROM part p JOIN pg_class c ON c.oid = p.oid
	UNION ALL
	SELECT format('partition_column|%s|%s|%s|type=%s|collation=%s|notnull=%s|default=%s',
				  regexp_replace(p.name, p.day, 'DAY'), a.attnum, a.attname,
				  format_type(a.atttypid, a.atttypmod),
				  CASE WHEN a.attcollation <> 0 THEN a.attcollation::regcollation::text END,
				  a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid))
	FROM part p
	JOIN pg_attribute a ON a.attrelid = p.oid AND a.attnum > 0 AND NOT a.attisdropped
	LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
	UNION ALL
	SELECT format('partition_index|%s|%s|parent=%s|comment=%s', regexp_replace(p.name, p.day, 'DAY'),
				  replace(pg_get_indexdef(i.indexrelid), p.day, 'DAY'),
				  (SELECT h.inhparent::regclass FROM pg_inherits h WHERE h.inhrelid = i.indexrelid),
				  obj_description(i.indexrelid, 'pg_class'))
	FROM part p JOIN pg_index i ON i.indrelid = p.oid
	UNION ALL
	SELECT format('partition_constraint|%s|%s|%s', regexp_replace(p.name, p.day, 'DAY'),
				  replace(k.conname, p.day, 'DAY'), pg_get_constraintdef(k.oid))
	FROM part p JOIN pg_constraint k ON k.conrelid = p.oid
	UNION ALL
	SELECT format('partition_trigger|%s|%s', regexp_replace(p.name, p.day, 'DAY'),
				  replace(pg_get_triggerdef(t.oid), p.day, 'DAY'))
	FROM part p JOIN pg_trigger t ON t.tgrelid = p.oid AND NOT t.tgisinternal
)
SELECT l FROM line ORDER BY l COLLATE "C";
