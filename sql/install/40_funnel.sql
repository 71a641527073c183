-- Funnels: the aggregates clickstream.funnel_agg, its companion
-- clickstream.funnel_steps (with the timestamps of the steps),
-- clickstream.funnel_breakdown and clickstream.retention; and
-- clickstream.funnel_definition, the funnel the gold layers count.
--
-- Semantics (docs/sessions-and-funnels.md, "Funnels", says the same at length):
--
--   funnel_agg(ts, window, [options,] VARIADIC conditions) returns how many
--   consecutive steps of the chain some attempt completed.  The first
--   conditions are the steps; the last ones, one per exclude(...) option,
--   are exclusions.
--   * Rows are taken in ts order.  Rows with equal ts: a row matching
--     condition 1 comes first; if both or neither do, the one matching
--     condition 2, and so on (steps, then exclusions); rows matching
--     nothing come last.  So the input order never changes the result.
--   * Every row matching step 1 starts an attempt.  An attempt advances at
--     the first later row that matches its next step, if that row is at
--     most `window` after the attempt's step-1 row (inclusive).  A row that
--     also matches the steps after that one advances the attempt through
--     them too (not under strict_once or strict_increase).
--   * strict_order: the attempt ends at the first row that does not advance
--     it (any row counts, also one matching no condition).
--   * strict_deduplication: the attempt ends at a row that matches a step it
--     already reached (2 .. its current step) without advancing it.
--   * strict_increase: a row advances the attempt only if its ts is strictly
--     greater than that of the row that last moved the attempt.
--   * strict_once: a row advances an attempt by one step at most.
--   * exclude(a, b): a row matching the exclusion, while the attempt has
--     reached step a but not step b, sends the attempt back to step a - 1
--     (it must reach step a again after the exclusion; back to step 0 ends
--     it).  A row that advances the attempt is not an exclusion for it.
--     `exclude` alone is exclude(1, number of steps).
--   * The result is the furthest step any attempt reached (0 when no row
--     matches step 1).  NULL ts: the row is ignored.  NULL condition: false.
--     No input rows at all: NULL.
--   * funnel_steps reports the attempt that reached that step first (at the
--     earliest row); if several reached it at the same row, the one that
--     started last.

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

-- Support functions -------------------------------------------------------

CREATE FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_transfn'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, text, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_transfn'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_combine'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_serialize(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'clickstream_funnel_serialize'
LANGUAGE C STRICT PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_deserialize(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_deserialize'
LANGUAGE C STRICT PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_final(internal)
RETURNS integer
AS 'MODULE_PATHNAME', 'clickstream_funnel_final'
LANGUAGE C PARALLEL SAFE;

CREATE TYPE clickstream.funnel_result AS (
	level integer,
	step_ts timestamptz[],
	time_to_convert interval[]
);

CREATE FUNCTION clickstream.funnel_steps_final(internal)
RETURNS clickstream.funnel_result
AS 'MODULE_PATHNAME', 'clickstream_funnel_steps_final'
LANGUAGE C PARALLEL SAFE;

COMMENT ON FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, boolean[]) IS
'Transition function of funnel_agg and funnel_steps: keeps the rows that match a condition (every row under strict_order) as a timestamp and a bitmask.';
COMMENT ON FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, text, boolean[]) IS
'Transition function of funnel_agg and funnel_steps with options: keeps the rows that match a condition (every row under strict_order) as a timestamp and a bitmask.';
COMMENT ON FUNCTION clickstream.funnel_combine(internal, internal) IS
'Combine function of funnel_agg and funnel_steps (parallel aggregation): concatenates the kept rows.';
COMMENT ON FUNCTION clickstream.funnel_serialize(internal) IS
'Serialize function of funnel_agg and funnel_steps: the state as a compact bytea (16 bytes per kept row for up to 64 conditions).';
COMMENT ON FUNCTION clickstream.funnel_deserialize(bytea, internal) IS
'Deserialize function of funnel_agg and funnel_steps; checks every field of the bytea.';
COMMENT ON FUNCTION clickstream.funnel_final(internal) IS
'Final function of funnel_agg: sorts the kept rows and returns the furthest step reached.';
COMMENT ON TYPE clickstream.funnel_result IS
'Result of funnel_steps: the furthest step reached, and for the reported attempt the timestamp of each step reached and the time since the previous step.';
COMMENT ON COLUMN clickstream.funnel_result.level IS
'The furthest step reached, as funnel_agg returns it (0: no row matched step 1).';
COMMENT ON COLUMN clickstream.funnel_result.step_ts IS
'step_ts[k]: timestamp of step k of the reported attempt, for k = 1 .. level.';
COMMENT ON COLUMN clickstream.funnel_result.time_to_convert IS
'time_to_convert[k] = step_ts[k] - step_ts[k - 1], for k = 2 .. level; time_to_convert[1] is NULL.';
COMMENT ON FUNCTION clickstream.funnel_steps_final(internal) IS
'Final function of funnel_steps: the furthest step reached, with the step timestamps of the attempt that reached it first.';

-- The aggregates ------------------------------------------------------------

CREATE AGGREGATE clickstream.funnel_agg(ts timestamptz, "window" interval, VARIADIC steps boolean[]) (
	SFUNC = clickstream.funnel_transfn,
	STYPE = internal,
	SSPACE = 256,
	FINALFUNC = clickstream.funnel_final,
	COMBINEFUNC = clickstream.funnel_combine,
	SERIALFUNC = clickstream.funnel_serialize,
	DESERIALFUNC = clickstream.funnel_deserialize,
	PARALLEL = SAFE
);

CREATE AGGREGATE clickstream.funnel_agg(ts timestamptz, "window" interval, options text, VARIADIC conditions boolean[]) (
	SFUNC = clickstream.funnel_transfn,
	STYPE = internal,
	SSPACE = 256,
	FINALFUNC = clickstream.funnel_final,
	COMBINEFUNC = clickstream.funnel_combine,
	SERIALFUNC = clickstream.funnel_serialize,
	DESERIALFUNC = clickstream.funnel_deserialize,
	PARALLEL = SAFE
);

CREATE AGGREGATE clickstream.funnel_steps(ts timestamptz, "window" interval, VARIADIC steps boolean[]) (
	SFUNC = clickstream.funnel_transfn,
	STYPE = internal,
	SSPACE = 256,
	FINALFUNC = clickstream.funnel_steps_final,
	COMBINEFUNC = clickstream.funnel_combine,
	SERIALFUNC = clickstream.funnel_serialize,
	DESERIALFUNC = clickstream.funnel_deserialize,
	PARALLEL = SAFE
);

CREATE AGGREGATE clickstream.funnel_steps(ts timestamptz, "window" interval, options text, VARIADIC conditions boolean[]) (
	SFUNC = clickstream.funnel_transfn,
	STYPE = internal,
	SSPACE = 256,
	FINALFUNC = clickstream.funnel_steps_final,
	COMBINEFUNC = clickstream.funnel_combine,
	SERIALFUNC = clickstream.funnel_serialize,
	DESERIALFUNC = clickstream.funnel_deserialize,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE clickstream.funnel_agg(timestamptz, interval, boolean[]) IS
'How many consecutive steps of the chain some attempt completed: rows in ts order (equal ts: rows matching earlier steps first), an attempt starts at each step-1 row and advances at the first row matching its next step at most window after its step-1 row. 0 when no row matches step 1; NULL ts rows are ignored, NULL conditions are false. See the README, "Funnels".';
COMMENT ON AGGREGATE clickstream.funnel_agg(timestamptz, interval, text, boolean[]) IS
'funnel_agg with options, comma-separated: strict_order (an attempt ends at the first row that does not advance it), strict_deduplication (it ends at a row repeating a step it reached), strict_increase (a row advances it only with a ts greater than its last move), strict_once (a row advances it one step at most), exclude(a, b) (the next condition after the steps is an exclusion: such a row between step a and step b sends the attempt back to step a - 1). See the README, "Funnels".';
COMMENT ON AGGREGATE clickstream.funnel_steps(timestamptz, interval, boolean[]) IS
'funnel_agg with the timestamps of the steps of the attempt that reached the furthest step first (if several at the same row, the one that started last), and the time between consecutive steps.';
COMMENT ON AGGREGATE clickstream.funnel_steps(timestamptz, interval, text, boolean[]) IS
'funnel_steps with the options of funnel_agg (strict_order, strict_deduplication, strict_increase, strict_once, exclude(a, b)).';

-- funnel_agg with 1 to 8 conditions written out: fixed-arity overloads.
-- PostgreSQL prefers a non-variadic match to a variadic one, so a call such
-- as funnel_agg(ts, '1 hour', a, b, c) takes these: the conditions arrive as
-- arguments, and the executor does not build an array for every row (~15 %
-- of the aggregate's time).  The same state, combine, serialize and final
-- functions as the VARIADIC forms: the same results, the same parallel plans.
DO $overloads$
DECLARE
	conds text;					-- boolean, boolean, ...
	named text;					-- c1 boolean, c2 boolean, ...
BEGIN
	FOR n IN 1 .. 8 LOOP
		conds := array_to_string(array_fill('boolean'::text, ARRAY[n]), ', ');
		named := (SELECT string_agg(format('c%s boolean', i), ', ' ORDER BY i)
				  FROM generate_series(1, n) i);
		EXECUTE format($f$
			CREATE OR REPLACE FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, %1$s)
			RETURNS internal AS 'MODULE_PATHNAME', 'clickstream_funnel_transfn_args'
			LANGUAGE C PARALLEL SAFE;
			CREATE OR REPLACE FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, text, %1$s)
			RETURNS internal AS 'MODULE_PATHNAME', 'clickstream_funnel_transfn_options_args'
			LANGUAGE C PARALLEL SAFE;
			COMMENT ON FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, %1$s) IS
			'Transition function of funnel_agg with %2$s condition(s) as arguments.';
			COMMENT ON FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, text, %1$s) IS
			'Transition function of funnel_agg with options and %2$s condition(s) as arguments.';
			CREATE OR REPLACE AGGREGATE clickstream.funnel_agg(ts timestamptz, "window" interval, %3$s) (
				SFUNC = clickstream.funnel_transfn, STYPE = internal, SSPACE = 256,
				FINALFUNC = clickstream.funnel_final, COMBINEFUNC = clickstream.funnel_combine,
				SERIALFUNC = clickstream.funnel_serialize,
				DESERIALFUNC = clickstream.funnel_deserialize, PARALLEL = SAFE);
			CREATE OR REPLACE AGGREGATE clickstream.funnel_agg(ts timestamptz, "window" interval, options text, %3$s) (
				SFUNC = clickstream.funnel_transfn, STYPE = internal, SSPACE = 256,
				FINALFUNC = clickstream.funnel_final, COMBINEFUNC = clickstream.funnel_combine,
				SERIALFUNC = clickstream.funnel_serialize,
				DESERIALFUNC = clickstream.funnel_deserialize, PARALLEL = SAFE);
			COMMENT ON AGGREGATE clickstream.funnel_agg(timestamptz, interval, %1$s) IS
			'funnel_agg(ts, window, VARIADIC steps) with %2$s condition(s) written out (the same result, without an array per row).';
			COMMENT ON AGGREGATE clickstream.funnel_agg(timestamptz, interval, text, %1$s) IS
			'funnel_agg(ts, window, options, VARIADIC conditions) with %2$s condition(s) written out (the same result, without an array per row).';
		$f$, conds, n, named);
	END LOOP;
END
$overloads$;

-- Breakdown ---------------------------------------------------------------

CREATE FUNCTION clickstream.funnel_breakdown_transfn(internal, timestamptz, interval, text, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_breakdown_transfn'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_breakdown_transfn(internal, timestamptz, interval, text, text, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_breakdown_transfn'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_breakdown_final(internal)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'clickstream_funnel_breakdown_final'
LANGUAGE C PARALLEL SAFE;

CREATE AGGREGATE clickstream.funnel_breakdown(ts timestamptz, "window" interval, key text, VARIADIC steps boolean[]) (
	SFUNC = clickstream.funnel_breakdown_transfn,
	STYPE = internal,
	SSPACE = 1024,
	FINALFUNC = clickstream.funnel_breakdown_final,
	PARALLEL = SAFE
);

CREATE AGGREGATE clickstream.funnel_breakdown(ts timestamptz, "window" interval, key text, label text, VARIADIC steps boolean[]) (
	SFUNC = clickstream.funnel_breakdown_transfn,
	STYPE = internal,
	SSPACE = 1024,
	FINALFUNC = clickstream.funnel_breakdown_final,
	PARALLEL = SAFE
);

-- The same, continuing a group whose result (prior) is known: what the
-- append path of refresh_gold() extends a session's funnels with.
CREATE FUNCTION clickstream.funnel_breakdown_continue_transfn(internal, jsonb, timestamptz, timestamptz, interval, text, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_breakdown_continue_transfn'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_breakdown_continue_transfn(internal, jsonb, timestamptz, timestamptz, interval, text, text, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_breakdown_continue_transfn'
LANGUAGE C PARALLEL SAFE;

CREATE AGGREGATE clickstream.funnel_breakdown_continue(prior jsonb, prior_end timestamptz, ts timestamptz, "window" interval, key text, VARIADIC steps boolean[]) (
	SFUNC = clickstream.funnel_breakdown_continue_transfn,
	STYPE = internal,
	SSPACE = 1024,
	FINALFUNC = clickstream.funnel_breakdown_final,
	PARALLEL = SAFE
);

CREATE AGGREGATE clickstream.funnel_breakdown_continue(prior jsonb, prior_end timestamptz, ts timestamptz, "window" interval, key text, label text, VARIADIC steps boolean[]) (
	SFUNC = clickstream.funnel_breakdown_continue_transfn,
	STYPE = internal,
	SSPACE = 1024,
	FINALFUNC = clickstream.funnel_breakdown_final,
	PARALLEL = SAFE
);

COMMENT ON FUNCTION clickstream.funnel_breakdown_transfn(internal, timestamptz, interval, text, boolean[]) IS
'Transition function of funnel_breakdown: registers the row''s key and keeps the row (timestamp, step bitmask, key) if it matches a step.';
COMMENT ON FUNCTION clickstream.funnel_breakdown_transfn(internal, timestamptz, interval, text, text, boolean[]) IS
'Transition function of funnel_breakdown with a label: also keeps the smallest label (byte order) of each key.';
COMMENT ON FUNCTION clickstream.funnel_breakdown_final(internal) IS
'Final function of funnel_breakdown: runs the funnel_agg pass per key over the key''s rows and the rows without a key.';
COMMENT ON AGGREGATE clickstream.funnel_breakdown(timestamptz, interval, text, boolean[]) IS
'The funnel per key, as jsonb {"key": level}: for each non-NULL key of the group, funnel_agg over the rows of that key and the rows with a NULL key, where a row with a NULL key never counts as step 1 (a checkout without a product moves every product''s funnel, it starts none). Keys of rows that match no step get level 0; NULL ts rows are ignored.';
COMMENT ON AGGREGATE clickstream.funnel_breakdown(timestamptz, interval, text, text, boolean[]) IS
'funnel_breakdown with a label per key: {"key": [level, label]}, label being the smallest (in byte order) non-NULL label on the key''s rows, or null.';

COMMENT ON FUNCTION clickstream.funnel_breakdown_continue_transfn(internal, jsonb, timestamptz, timestamptz, interval, text, boolean[]) IS
'Transition function of funnel_breakdown_continue: seeds a new state with prior, then does what funnel_breakdown_transfn does.';
COMMENT ON FUNCTION clickstream.funnel_breakdown_continue_transfn(internal, jsonb, timestamptz, timestamptz, interval, text, text, boolean[]) IS
'Transition function of funnel_breakdown_continue with a label: seeds a new state with prior ({"key": [level, label]}), then does what funnel_breakdown_transfn does.';
COMMENT ON AGGREGATE clickstream.funnel_breakdown_continue(jsonb, timestamptz, timestamptz, interval, text, boolean[]) IS
'funnel_breakdown of a group that continues an earlier one whose funnel_breakdown was prior (taken from the group''s first row; NULL: none), all of whose rows were at or before prior_end: as if the group also had, for each key of prior at level L, L rows of that key at prior_end matching steps 1 .. L, one step each. With rows after prior_end only, that is the earlier group''s rows and these together, when each step is its own event type (clickstream.funnel_event_types()). refresh_gold() extends a session''s category_funnel with it.';
COMMENT ON AGGREGATE clickstream.funnel_breakdown_continue(jsonb, timestamptz, timestamptz, interval, text, text, boolean[]) IS
'funnel_breakdown_continue with a label per key: prior is {"key": [level, label]}, and each key''s label is the smallest of prior''s and the rows''. refresh_gold() extends a session''s product_funnel with it.';

-- Retention ---------------------------------------------------------------

CREATE FUNCTION clickstream.retention_transfn(bit, boolean[])
RETURNS bit
AS 'MODULE_PATHNAME', 'clickstream_retention_transfn'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.retention_final(bit)
RETURNS boolean[]
AS 'MODULE_PATHNAME', 'clickstream_retention_final'
LANGUAGE C STRICT PARALLEL SAFE;

CREATE AGGREGATE clickstream.retention(VARIADIC conditions boolean[]) (
	SFUNC = clickstream.retention_transfn,
	STYPE = bit,
	FINALFUNC = clickstream.retention_final,
	COMBINEFUNC = pg_catalog.bitor,
	PARALLEL = SAFE
);

COMMENT ON FUNCTION clickstream.retention_transfn(bit, boolean[]) IS
'Transition function of retention: ORs the row''s conditions into a bit string.';
COMMENT ON FUNCTION clickstream.retention_final(bit) IS
'Final function of retention: r[1] = condition 1 held on some row, r[k] = condition 1 and condition k each held on some row.';
COMMENT ON AGGREGATE clickstream.retention(boolean[]) IS
'ClickHouse-style retention: r[1] is true when condition 1 held on some row of the group; r[k] when condition 1 and condition k each held on some row (not necessarily the same one). NULL conditions are false.';

-- The funnel of the gold tables -------------------------------------------------------

CREATE TABLE clickstream.funnel_definition (
	step integer PRIMARY KEY CHECK (step BETWEEN 1 AND 64),
	name text NOT NULL CHECK (name <> ''),
	event_type text NOT NULL CHECK (event_type <> ''),
	builtin boolean NOT NULL DEFAULT false
);

INSERT INTO clickstream.funnel_definition VALUES
	(1, 'view', 'page_view', true),
	(2, 'add to cart', 'add_to_cart', true),
	(3, 'begin checkout', 'begin_checkout', true),
	(4, 'purchase', 'purchase', true);

SELECT pg_catalog.pg_extension_config_dump('clickstream.funnel_definition', 'WHERE NOT builtin');

COMMENT ON TABLE clickstream.funnel_definition IS
'The funnel of the gold tables, one row per step (steps 1 .. n, no gaps, n <= 64, each step its own event type): a session reaches step k when its events hold events of the step types 1 .. k in that order, by ts (events with equal ts count in step order; clickstream.funnel_agg, the session as its window). Edit it to fit your event names; the next clickstream.refresh() rebuilds sessions and funnels.';
COMMENT ON COLUMN clickstream.funnel_definition.step IS 'Position in the funnel, 1 .. n without gaps.';
COMMENT ON COLUMN clickstream.funnel_definition.name IS 'Label of the step in the gold tables (step_name).';
COMMENT ON COLUMN clickstream.funnel_definition.event_type IS 'The event_type of silver events that make the step; one step per event type.';
COMMENT ON COLUMN clickstream.funnel_definition.builtin IS 'True while the funnel is the one the extension ships, untouched (not dumped by pg_dump: the restore''s CREATE EXTENSION makes it); any change to the funnel makes every step yours (false).';

-- The step event types in order; a plain error when the definition is unusable.
CREATE FUNCTION clickstream.funnel_event_types()
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	types text[];
	steps integer;
	last_step integer;
	repeated text;
BEGIN
	SELECT array_agg(event_type ORDER BY step), count(*), max(step)
	INTO types, steps, last_step
	FROM clickstream.funnel_definition;
	IF steps = 0 THEN
		RAISE EXCEPTION 'clickstream.funnel_definition has no steps'
			USING HINT = 'Insert the steps of your funnel, numbered 1 .. n, in the same transaction that deletes the old ones.';
	ELSIF last_step <> steps THEN
		RAISE EXCEPTION 'clickstream.funnel_definition must number its steps 1 .. n without gaps'
			USING DETAIL = format('It has %s steps, the last one numbered %s.', steps, last_step),
				  HINT = 'Renumber the steps (UPDATE clickstream.funnel_definition SET step = ...).';
	END IF;
	-- one event matching two consecutive steps would make both (funnel_agg
	-- lets a row advance an attempt through every step it matches)
	SELECT format('Event type %L is the type of steps %s.', event_type,
				  string_agg(step::text, ', ' ORDER BY step))
	INTO repeated
	FROM clickstream.funnel_definition
	GROUP BY event_type HAVING count(*) > 1
	ORDER BY min(step) LIMIT 1;
	IF repeated IS NOT NULL THEN
		RAISE EXCEPTION 'clickstream.funnel_definition gives two steps the same event type'
			USING DETAIL = repeated,
				  HINT = 'Give each step its own event type: one event of a type that two steps share would make both steps.';
	END IF;
	RETURN types;
END
$$;

COMMENT ON FUNCTION clickstream.funnel_event_types() IS
'The event types of the funnel steps of clickstream.funnel_definition, in step order; raises an error when the steps are not numbered 1 .. n or two steps have the same event type.';

-- Check the definition when a transaction that changed it commits (so that a
-- DELETE and an INSERT in one transaction may replace it).
CREATE FUNCTION clickstream.funnel_definition_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM clickstream.funnel_event_types();
	RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER funnel_definition_steps
AFTER INSERT OR UPDATE OR DELETE ON clickstream.funnel_definition
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION clickstream.funnel_definition_check();

COMMENT ON FUNCTION clickstream.funnel_definition_check() IS
'Trigger function: at commit of a change of clickstream.funnel_definition, refuses steps that are not numbered 1 .. n or that repeat an event type.';
COMMENT ON TRIGGER funnel_definition_steps ON clickstream.funnel_definition IS
'Refuses, at commit, a funnel whose steps are not numbered 1 .. n (or that has none), or whose steps repeat an event type.';

-- The funnel is one whole: pg_dump saves it only once it is the user's (the
-- restore's CREATE EXTENSION makes the shipped one), so any change makes
-- every step the user's, and a step inserted where the shipped funnel has
-- one replaces the shipped funnel whole (what restoring a dump does).
CREATE FUNCTION clickstream.funnel_definition_shipped()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_LEVEL = 'ROW' THEN
		IF NOT NEW.builtin AND EXISTS (SELECT 1 FROM clickstream.funnel_definition f
									   WHERE f.builtin AND f.step = NEW.step) THEN
			DELETE FROM clickstream.funnel_definition f WHERE f.builtin;
		END IF;
		RETURN NEW;
	END IF;
	IF EXISTS (SELECT 1 FROM clickstream.funnel_definition f WHERE f.builtin) THEN
		UPDATE clickstream.funnel_definition f SET builtin = false WHERE f.builtin;
	END IF;
	RETURN NULL;
END
$$;

CREATE TRIGGER funnel_definition_shipped_step
BEFORE INSERT ON clickstream.funnel_definition
FOR EACH ROW EXECUTE FUNCTION clickstream.funnel_definition_shipped();
CREATE TRIGGER funnel_definition_shipped
AFTER INSERT OR UPDATE OR DELETE ON clickstream.funnel_definition
FOR EACH STATEMENT EXECUTE FUNCTION clickstream.funnel_definition_shipped();

COMMENT ON FUNCTION clickstream.funnel_definition_shipped() IS
'Trigger function of clickstream.funnel_definition that keeps a dump exact: a step inserted where the shipped funnel has one replaces the shipped funnel whole (as restoring a dump does); after any other change every step is the user''s (builtin = false), so that pg_dump saves the whole funnel.';
COMMENT ON TRIGGER funnel_definition_shipped_step ON clickstream.funnel_definition IS
'A step inserted where the shipped funnel has one replaces the shipped funnel whole (clickstream.funnel_definition_shipped).';
COMMENT ON TRIGGER funnel_definition_shipped ON clickstream.funnel_definition IS
'After any change, every step is the user''s and is dumped (clickstream.funnel_definition_shipped).';
