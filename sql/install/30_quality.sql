-- Data quality: declared checks over silver (and gold as it comes) and the
-- history of their results; what dbt tests did in the old stacks.

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

CREATE TABLE clickstream.quality_checks (
	name text PRIMARY KEY,
	layer text NOT NULL CHECK (layer IN ('bronze', 'silver', 'gold', 'pipeline')),
	severity text NOT NULL DEFAULT 'error' CHECK (severity IN ('error', 'warning')),
	description text NOT NULL,
	query text NOT NULL,
	enabled boolean NOT NULL DEFAULT true,
	builtin boolean NOT NULL DEFAULT false,
	modified boolean NOT NULL DEFAULT false
);

COMMENT ON TABLE clickstream.quality_checks IS
'Declared data-quality checks run by clickstream.check_quality(). query returns one number, the count of failing rows; $1 is the since date passed to check_quality (NULL: all days), for checks that can be restricted by event_date. Add your own rows (as the table''s owner). The queries run as whoever calls check_quality (a superuser''s pg_cron job, say), with search_path pg_catalog, pg_temp (name every table by schema): only the owner may write this table, and check_quality refuses to run while a role that does not already have the caller''s rights can.';
COMMENT ON COLUMN clickstream.quality_checks.name IS 'Check name.';
COMMENT ON COLUMN clickstream.quality_checks.layer IS 'Layer checked: bronze, silver, gold or pipeline (offsets and bookkeeping).';
COMMENT ON COLUMN clickstream.quality_checks.severity IS 'error or warning; both are recorded, check_quality() raises a WARNING for failed error checks.';
COMMENT ON COLUMN clickstream.quality_checks.description IS 'What a failure means.';
COMMENT ON COLUMN clickstream.quality_checks.query IS 'SQL returning the number of failing rows (0 = pass); $1 is the since date (may be NULL). Runs as the caller of check_quality with search_path pg_catalog, pg_temp.';

-- The queries run as whoever calls check_quality(): writing one is running
-- SQL as that role.  Only the owner writes this table (no grant; the reader
-- role does not even read it), and check_quality() checks that it stays so.
REVOKE ALL ON TABLE clickstream.quality_checks FROM PUBLIC;
COMMENT ON COLUMN clickstream.quality_checks.enabled IS 'false skips the check.';
COMMENT ON COLUMN clickstream.quality_checks.builtin IS 'True for the checks the extension ships (they cannot be deleted: set enabled = false); pg_dump saves them only when modified, the restore''s CREATE EXTENSION makes the others.';
COMMENT ON COLUMN clickstream.quality_checks.modified IS 'True for a shipped check that was edited (enabled = false, say) or replaced by an INSERT of the same name: pg_dump saves it.';

INSERT INTO clickstream.quality_checks (name, layer, severity, description, query, builtin) VALUES
('events_not_null', 'silver', 'error',
 'Required silver columns are never NULL.',
 $q$SELECT count(*) FROM clickstream.events
    WHERE ($1::date IS NULL OR event_date >= $1::date)
      AND (event_id IS NULL OR event_type IS NULL OR user_id IS NULL OR ts IS NULL
           OR event_date IS NULL OR event_hour IS NULL OR is_high_value IS NULL
           OR event_id = '' OR event_type = '' OR user_id = '')$q$, true),
('events_unique_event_id', 'silver', 'error',
 'No event_id appears twice in silver.',
 $q$SELECT count(*) FROM (SELECT event_id FROM clickstream.events
    WHERE ($1::date IS NULL OR event_date >= $1::date)
    GROUP BY event_id HAVING count(*) > 1) d$q$, true),
('events_accepted_event_types', 'silver', 'warning',
 'Every event_type is listed in clickstream.event_types.',
 $q$SELECT count(*) FROM clickstream.events e
    WHERE ($1::date IS NULL OR e.event_date >= $1::date)
      AND NOT EXISTS (SELECT 1 FROM clickstream.event_types t WHERE t.event_type = e.event_type)$q$, true),
('purchases_have_order_and_price', 'silver', 'error',
 'Every purchase has a price, and an order_id unless clickstream.require_order_id is off (silver refuses the others: purchase_without_price, purchase_without_order).',
 $q$SELECT count(*) FROM clickstream.events
    WHERE ($1::date IS NULL OR event_date >= $1::date)
      AND event_type = 'purchase'
      AND (price IS NULL
           OR ((order_id IS NULL OR order_id = '')
               AND current_setting('clickstream.require_order_id')::boolean))$q$, true),
('events_valid_values', 'silver', 'error',
 'Prices are not negative, quantities are at least 1, revenue is price x quantity on purchases and 0 elsewhere.',
 $q$SELECT count(*) FROM clickstream.events
    WHERE ($1::date IS NULL OR event_date >= $1::date)
      AND (price < 0 OR quantity < 1
           OR (event_type = 'purchase' AND revenue IS DISTINCT FROM price * coalesce(quantity, 1))
           OR (event_type <> 'purchase' AND revenue IS DISTINCT FROM 0))$q$, true),
('events_date_matches_timezone', 'silver', 'warning',
 'event_date and event_hour agree with ts in the current clickstream.timezone (a failure means the setting changed since those rows were promoted).',
 $q$SELECT count(*) FROM clickstream.events
    WHERE ($1::date IS NULL OR event_date >= $1::date)
      AND ((ts AT TIME ZONE current_setting('clickstream.timezone'))::date <> event_date
           OR extract(hour FROM ts AT TIME ZONE current_setting('clickstream.timezone')) <> event_hour)$q$, true),
('event_ids_match_events', 'silver', 'error',
 'Every event of clickstream.events has its id in clickstream.event_ids, on its day. (Ids without an event are kept on purpose: those of days dropped, of events deleted by hand and of events a trigger on events skipped, so that their redeliveries stay duplicates.)',
 $q$SELECT count(*) FROM clickstream.events e
    WHERE ($1::date IS NULL OR e.event_date >= $1::date)
      AND NOT EXISTS (SELECT 1 FROM clickstream.event_ids i
                      WHERE i.event_id = e.event_id AND i.event_date = e.event_date)$q$, true),
('events_have_runs', 'pipeline', 'warning',
 'Every touched row refers to a refresh run that exists (runs are pruned after clickstream.history_retention).',
 $q$SELECT count(*) FROM clickstream.touched t
    WHERE NOT EXISTS (SELECT 1 FROM clickstream.refresh_history h WHERE h.run_id = t.run_id)$q$, true),
('watermark_not_ahead_of_position', 'pipeline', 'error',
 'The durable watermark of a partition is never ahead of its stored ingest position.',
 $q$SELECT count(*) FROM clickstream.watermarks w
    JOIN clickstream.ingest_positions p USING (topic, partition)
    WHERE w.durable_offset > p.next_offset$q$, true),
('refresh_not_failing', 'pipeline', 'error',
 'The last refresh run that ended did not fail: while refreshes fail, bronze grows and silver and gold fall behind (clickstream.refresh_history.error says why).',
 $q$SELECT count(*) FROM (SELECT h.status FROM clickstream.refresh_history h
    WHERE h.kind = 'refresh' AND h.status IN ('succeeded', 'failed')
    ORDER BY h.run_id DESC LIMIT 1) last
    WHERE last.status = 'failed'$q$, true),
('bronze_below_watermark', 'bronze', 'error',
 'Bronze holds no message below the durable watermark (those are in silver or dead_letters already).',
 $q$SELECT count(*) FROM clickstream.bronze b
    JOIN clickstream.watermarks w ON w.topic = b.kafka_topic AND w.partition = b.kafka_partition
    WHERE b.kafka_offset < w.durable_offset$q$, true);

SELECT pg_catalog.pg_extension_config_dump('clickstream.quality_checks', 'WHERE NOT builtin OR modified');

CREATE TRIGGER quality_checks_shipped
BEFORE INSERT OR UPDATE OR DELETE ON clickstream.quality_checks
FOR EACH ROW EXECUTE FUNCTION clickstream.keep_shipped_rows('name',
	'Disable it instead: UPDATE clickstream.quality_checks SET enabled = false WHERE name = ...');
CREATE TRIGGER quality_checks_shipped_truncate
BEFORE TRUNCATE ON clickstream.quality_checks
FOR EACH STATEMENT EXECUTE FUNCTION clickstream.keep_shipped_rows();

COMMENT ON TRIGGER quality_checks_shipped ON clickstream.quality_checks IS
'Keeps a dump exact: an edited shipped check (enabled = false, say) is marked modified, an inserted check replaces the unmodified shipped one of the same name, a shipped check cannot be deleted (clickstream.keep_shipped_rows).';
COMMENT ON TRIGGER quality_checks_shipped_truncate ON clickstream.quality_checks IS
'Refuses TRUNCATE while shipped checks are there (a restore would bring them back).';

CREATE TABLE clickstream.quality_results (
	id bigserial PRIMARY KEY,
	checked_at timestamptz NOT NULL DEFAULT now(),
	check_name text NOT NULL,
	layer text NOT NULL,
	severity text NOT NULL,
	failures bigint,
	passed boolean NOT NULL,
	since date,
	duration interval NOT NULL,
	error text
);

CREATE INDEX quality_results_checked ON clickstream.quality_results (checked_at);

COMMENT ON TABLE clickstream.quality_results IS
'History of clickstream.check_quality() results: one row per check per call. Kept for clickstream.history_retention.';
COMMENT ON SEQUENCE clickstream.quality_results_id_seq IS 'Numbers quality results.';
COMMENT ON COLUMN clickstream.quality_results.id IS 'Result number.';
COMMENT ON COLUMN clickstream.quality_results.checked_at IS 'Start of the check_quality() call (the same for every check of one call).';
COMMENT ON COLUMN clickstream.quality_results.check_name IS 'clickstream.quality_checks.name.';
COMMENT ON COLUMN clickstream.quality_results.layer IS 'Layer of the check.';
COMMENT ON COLUMN clickstream.quality_results.severity IS 'Severity of the check.';
COMMENT ON COLUMN clickstream.quality_results.failures IS 'Failing rows; NULL when the check itself failed (see error).';
COMMENT ON COLUMN clickstream.quality_results.passed IS 'failures = 0.';
COMMENT ON COLUMN clickstream.quality_results.since IS 'The since date the checks were restricted to (NULL: all days).';
COMMENT ON COLUMN clickstream.quality_results.duration IS 'How long the check ran.';
COMMENT ON COLUMN clickstream.quality_results.error IS 'Error raised by the check query, if any.';

CREATE FUNCTION clickstream.check_quality(since date DEFAULT NULL)
RETURNS SETOF clickstream.quality_results
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record;
	n bigint;
	err text;
	started timestamptz;
	res clickstream.quality_results;
	writer name;
BEGIN
	-- whoever can write a check runs SQL as this caller: only roles that
	-- have the caller's rights already may (superusers, the caller and the
	-- roles that are members of it; predefined roles count by their members)
	SELECT r.rolname INTO writer FROM pg_roles r
	WHERE NOT r.rolsuper AND r.rolname !~ '^pg_'
		AND NOT pg_has_role(r.oid, current_user, 'USAGE')
		AND has_table_privilege(r.oid, 'clickstream.quality_checks', 'INSERT, UPDATE')
	ORDER BY r.rolname LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'clickstream.check_quality(): role % can write clickstream.quality_checks, whose queries this would run as %',
			writer, current_user
			USING HINT = 'REVOKE INSERT, UPDATE ON clickstream.quality_checks FROM ' || quote_ident(writer) || ', or run check_quality() as a role it is a member of.';
	END IF;
	FOR c IN SELECT * FROM clickstream.quality_checks WHERE enabled ORDER BY layer, name LOOP
		started := clock_timestamp();
		n := NULL;
		err := NULL;
		BEGIN
			EXECUTE c.query INTO n USING since;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
		END;
		INSERT INTO clickstream.quality_results
			(check_name, layer, severity, failures, passed, since, duration, error)
		VALUES (c.name, c.layer, c.severity, n, err IS NULL AND coalesce(n, 0) = 0, since,
				clock_timestamp() - started, err)
		RETURNING * INTO res;
		IF NOT res.passed AND c.severity = 'error' THEN
			RAISE WARNING 'clickstream quality check % failed: %', c.name,
				coalesce(err, n || ' failing rows')
				USING HINT = c.description;
		END IF;
		RETURN NEXT res;
	END LOOP;
END
$$;

COMMENT ON FUNCTION clickstream.check_quality(date) IS
'Run every enabled check of clickstream.quality_checks (restricted to event_date >= since where the check allows it), record each result in clickstream.quality_results and return them; a failed error-severity check also raises a WARNING. The check queries run as the caller, with search_path pg_catalog, pg_temp; it refuses to run while a role without the caller''s rights can write quality_checks.';
