-- Orchestration: clickstream.refresh() (silver steps, each with gold brought
-- up to date in its transaction), dead-letter replay, pruning of the
-- history tables, and scheduling with pg_cron.  Uses every layer before it.

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

-- The refresh ---------------------------------------------------------------

-- Only one refresh runs at a time, and nothing else writes silver or gold
-- meanwhile, with locks no other role can take (an advisory lock, which any
-- role that can connect may hold, would let it stop the pipeline):
--
--  * every transaction that writes silver or gold (a refresh's claim, each of
--    its steps, its end; rebuild_gold, replay_dead_letters, refresh_gold)
--    first takes LOCK TABLE clickstream.refresh_history IN EXCLUSIVE MODE.
--    Modes above ACCESS SHARE need UPDATE, DELETE or TRUNCATE on the table,
--    which only its owner has; EXCLUSIVE does not conflict with the ACCESS
--    SHARE of readers (dashboards, pg_dump).
--  * the refresh commits per step, so its claim spans its transactions as a
--    row: its refresh_history row with status running and its pid.  The
--    claim is alive while that backend is still running the statement that
--    made it (pg_stat_activity: the pid, state active, a query_start not
--    after the row's started_at); otherwise (the backend died, or went idle
--    after a cancel) the run is marked interrupted and a new one takes over.
--
-- Every exit records: a failure or cancel in a step, in gold or at the end
-- marks the run failed with the error; in the claim itself it rolls back
-- the claim.  A transaction lock goes with its transaction.
--
-- search_path: a procedure that commits cannot have a SET clause, so each
-- of its transactions sets pg_catalog, pg_temp locally first (and every
-- reference is qualified besides).

CREATE FUNCTION clickstream.in_transaction_block()
RETURNS boolean
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'clickstream_in_transaction_block';

COMMENT ON FUNCTION clickstream.in_transaction_block() IS
'Internal: whether the caller is inside a transaction block (after BEGIN); clickstream.refresh(), which commits per step, refuses to start there with a hint.';

REVOKE ALL ON FUNCTION clickstream.in_transaction_block() FROM PUBLIC;

CREATE PROCEDURE clickstream.refresh(max_steps integer DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
	run bigint;
	step record;
	steps integer := 0;
	failed boolean := false;
	more boolean := true;
	msg text;
	det text;
	ctx text;
	code text;
	holder integer;
	batch bigint;
	batch_bytes bigint;
	today date;
	phase text;
	gold record;
	gold_started timestamptz;
	i integer;
	started timestamptz := pg_catalog.clock_timestamp();
BEGIN
	PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
	IF max_steps IS NOT NULL AND max_steps OPERATOR(pg_catalog.<) 1 THEN
		RAISE EXCEPTION 'max_steps must be at least 1, not %', max_steps;
	END IF;
	-- Fails at once inside a transaction block, before anything is locked.
	IF clickstream.in_transaction_block() THEN
		RAISE EXCEPTION 'clickstream.refresh() cannot run inside a transaction block'
			USING ERRCODE = 'active_sql_transaction',
				  HINT = 'It commits after every step: CALL it on its own, not after BEGIN (in psql, with AUTOCOMMIT on).';
	END IF;
	COMMIT;

	-- The claim: one transaction.  A cancel here rolls it back whole.  A
	-- live claim is looked for first without the lock, which a running
	-- step holds (so that a second call returns at once), then under it.
	PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
	batch := pg_catalog.current_setting('clickstream.refresh_batch_size')::bigint;
	batch_bytes := pg_catalog.pg_size_bytes(pg_catalog.current_setting('clickstream.refresh_batch_bytes'));
	FOR i IN 1 .. 2 LOOP
		IF i = 2 THEN
			LOCK TABLE clickstream.refresh_history IN EXCLUSIVE MODE;
			PERFORM pg_catalog.pg_stat_clear_snapshot();	-- activity as of now
		END IF;
		SELECT h.pid INTO holder FROM clickstream.refresh_history h
		WHERE h.status = 'running' AND h.kind = 'refresh'
			AND EXISTS (SELECT FROM pg_catalog.pg_stat_activity a
						WHERE a.pid = h.pid AND a.pid <> pg_catalog.pg_backend_pid()
							AND (a.state IS NULL OR a.state = 'disabled'
								 OR (a.state = 'active' AND a.query_start <= h.started_at)))
		ORDER BY h.run_id DESC
		LIMIT 1;
		IF FOUND THEN
			RAISE NOTICE 'clickstream.refresh() is already running (pid %), skipping this call', holder;
			RETURN;
		END IF;
	END LOOP;
	-- a claim whose backend is gone or no longer running it is stale
	UPDATE clickstream.refresh_history
	SET status = 'interrupted', finished_at = pg_catalog.clock_timestamp()
	WHERE status = 'running';
	INSERT INTO clickstream.refresh_history (kind) VALUES ('refresh') RETURNING run_id INTO run;
	COMMIT;

	-- From here on, every way out records the run.  The run's phases, the
	-- start (today's partitions), each step and the end (the status, the
	-- pruning), are one transaction each, run by one guarded block.
	phase := 'start';
	LOOP
		BEGIN
			BEGIN
				PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
				LOCK TABLE clickstream.refresh_history IN EXCLUSIVE MODE;
				IF phase = 'start' THEN
					-- today's and tomorrow's partitions exist before their events arrive
					today := (pg_catalog.now() AT TIME ZONE pg_catalog.current_setting('clickstream.timezone'))::date;
					PERFORM clickstream.create_partitions(ARRAY[today, today OPERATOR(pg_catalog.+) 1]);
				ELSIF phase = 'step' THEN
					-- a silver step and gold brought up to date with it
					step := clickstream.refresh_step(run, batch, batch_bytes);
					gold_started := pg_catalog.clock_timestamp();
					gold := clickstream.refresh_gold();
					steps := steps OPERATOR(pg_catalog.+) 1;
					-- rows that came while the run went on are taken for about a
					-- minute (a scheduled run that goes past its next start time
					-- is followed at once by that one); the rest of a catch-up map
					-- always.  (Counted once gold is done: counted after the silver
					-- part, the rows of the longer part of the step went unseen, and
					-- a step of a minute's backlog at 7 500 events/s, 40 s, found
					-- fewer than a tenth of a step waiting and left 300 000 rows to
					-- the next scheduled run: freshness 101 s.)
					more := (step.more OR clickstream.refresh_more(batch))
						AND (max_steps IS NULL OR steps OPERATOR(pg_catalog.<) max_steps)
						AND (pg_catalog.to_regclass('pg_temp.clickstream_map_state') IS NOT NULL
							 OR pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) started
								OPERATOR(pg_catalog.<) '1 minute'::interval);
					UPDATE clickstream.refresh_history h
					SET steps = h.steps OPERATOR(pg_catalog.+) 1,
						rows_read = h.rows_read OPERATOR(pg_catalog.+) step.rows_read,
						rows_promoted = h.rows_promoted OPERATOR(pg_catalog.+) step.rows_promoted,
						rows_duplicate = h.rows_duplicate OPERATOR(pg_catalog.+) step.rows_duplicate,
						rows_rejected = h.rows_rejected OPERATOR(pg_catalog.+) step.rows_rejected,
						partitions_created = h.partitions_created OPERATOR(pg_catalog.+) step.partitions_created,
						sessions_written = h.sessions_written OPERATOR(pg_catalog.+) gold.sessions_written,
						gold_time = h.gold_time OPERATOR(pg_catalog.+) (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) gold_started),
						marts_time = h.marts_time OPERATOR(pg_catalog.+) gold.marts_time,
						sessions_extended = h.sessions_extended OPERATOR(pg_catalog.+) gold.sessions_extended,
						events_reread = h.events_reread OPERATOR(pg_catalog.+) gold.events_reread
					WHERE h.run_id = run;
				ELSE
					PERFORM clickstream.refresh_map_drop();	-- the catch-up map of refresh_step
					UPDATE clickstream.refresh_history
					SET status = 'succeeded', finished_at = pg_catalog.clock_timestamp()
					WHERE run_id = run;
					PERFORM clickstream.prune_history();
				END IF;
			EXCEPTION WHEN OTHERS OR query_canceled THEN
				-- a cancel or statement_timeout too: recorded, then re-raised
				GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
					ctx = PG_EXCEPTION_CONTEXT, code = RETURNED_SQLSTATE;
				failed := true;
			END;
		EXCEPTION WHEN query_canceled THEN
			-- a second cancel while the first one (or an error) unwound the
			-- phase (a double ^C, a watchdog's cancel after statement_timeout):
			-- it fires in the handler above, and the run would stay "running"
			-- without its error.  When it comes before the handler read the
			-- first error, the cancel is what is recorded.
			IF NOT failed THEN
				GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
					ctx = PG_EXCEPTION_CONTEXT, code = RETURNED_SQLSTATE;
				failed := true;
			END IF;
		END;
		IF failed THEN
			IF pg_catalog.to_regclass('clickstream.refresh_history') IS NULL THEN
				RAISE EXCEPTION 'the extension clickstream was dropped while clickstream.refresh() was running'
					USING DETAIL = msg;
			END IF;
			PERFORM clickstream.refresh_failed(run, msg, det, ctx);
		END IF;
		COMMIT;
		EXIT WHEN failed OR phase = 'end';
		phase := CASE WHEN more THEN 'step' ELSE 'end' END;
	END LOOP;
	IF failed THEN
		-- the catch-up map of refresh_step, which can be large, is not kept
		-- in the session until it ends
		PERFORM clickstream.refresh_map_drop();
		COMMIT;
		RAISE EXCEPTION 'clickstream.refresh() run % failed: %', run, msg
			USING ERRCODE = code,
				  HINT = 'The failed step was rolled back and its rows stay in bronze; the next run retries them. See clickstream.refresh_history.';
	END IF;
END
$$;

COMMENT ON PROCEDURE clickstream.refresh(integer) IS
'Build silver from bronze and gold from silver: repeat steps of at most clickstream.refresh_batch_size rows and clickstream.refresh_batch_bytes payload bytes (a backlog larger than one step is read from bronze once, into a map of the session that the steps take their rows from), each one transaction that also brings gold up to date, until what bronze held at the start is drained or max_steps is reached; then, for about a minute from its start, further steps for the rows that came meanwhile while at least a tenth of refresh_batch_size of them wait (so a busy pipeline is not idle until the next scheduled run). Only one runs at a time (the second returns at once with a NOTICE; a run whose backend died or stopped running it is marked interrupted and taken over). A failing or cancelled step (or start, or end) is rolled back, recorded in refresh_history and re-raised; its rows are retried by the next run. Must be called outside a transaction block (it commits).';

CREATE FUNCTION clickstream.refresh_failed(run bigint, msg text, det text, ctx text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- A second cancel while the failure is written (a double ^C, a watchdog's
	-- cancel after statement_timeout) would roll the record back and leave
	-- the run "running" until the next one marks it interrupted, without its
	-- error: written once more.  Not more: a write that waits for a lock
	-- someone else holds on the run's row is stopped by the next cancel.
	FOR attempt IN 1 .. 2 LOOP
		BEGIN
			UPDATE clickstream.refresh_history
			SET status = 'failed', finished_at = clock_timestamp(),
				error = msg || coalesce(E'\nDETAIL: ' || nullif(det, ''), '') ||
					coalesce(E'\nCONTEXT: ' || nullif(ctx, ''), '')
			WHERE run_id = run;
			RETURN;
		EXCEPTION WHEN query_canceled THEN
			IF attempt = 2 THEN
				RAISE;
			END IF;
		END;
	END LOOP;
END
$$;

COMMENT ON FUNCTION clickstream.refresh_failed(bigint, text, text, text) IS
'Internal: record a run of clickstream.refresh() as failed with its error (message, detail, context); written again after a cancel, and stopped by a second one.';

REVOKE ALL ON FUNCTION clickstream.refresh_failed(bigint, text, text, text) FROM PUBLIC;

CREATE FUNCTION clickstream.prune_history()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	horizon timestamptz := now() - current_setting('clickstream.history_retention')::interval;
	oldest_kept bigint;
BEGIN
	SELECT min(run_id) INTO oldest_kept FROM clickstream.refresh_history
	WHERE finished_at IS NULL OR finished_at >= horizon;
	-- never the rows gold has not applied yet
	DELETE FROM clickstream.touched WHERE run_id < coalesce(oldest_kept,
		(SELECT max(run_id) + 1 FROM clickstream.refresh_history))
		AND touch_id <= (SELECT g.touch_id FROM clickstream.gold_state g);
	DELETE FROM clickstream.refresh_history WHERE finished_at < horizon;
	DELETE FROM clickstream.quality_results WHERE checked_at < horizon;
END
$$;

COMMENT ON FUNCTION clickstream.prune_history() IS
'Internal: delete refresh_history, touched and quality_results rows older than clickstream.history_retention (called by refresh).';

-- Replaying dead letters ----------------------------------------------------

CREATE FUNCTION clickstream.replay_dead_letters(only_reason text DEFAULT NULL,
	since timestamptz DEFAULT NULL, ids bigint[] DEFAULT NULL,
	OUT run_id bigint, OUT replayed bigint, OUT promoted bigint,
	OUT duplicates bigint, OUT still_rejected bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
BEGIN
	-- never alongside a refresh step, gold or another replay: wait for it
	-- (see clickstream.refresh())
	LOCK TABLE clickstream.refresh_history IN EXCLUSIVE MODE;
	INSERT INTO clickstream.refresh_history (kind) VALUES ('replay')
	RETURNING refresh_history.run_id INTO run_id;
	PERFORM clickstream.refresh_scratch();

	SELECT * INTO r FROM clickstream.promote_rows(run_id, $src$
			DELETE FROM clickstream.dead_letters d
			WHERE d.payload IS NOT NULL AND NOT d.payload_truncated
				AND d.kafka_topic IS NOT NULL AND d.kafka_partition IS NOT NULL
				AND d.kafka_offset IS NOT NULL
				AND d.reason NOT IN ('message_too_large', 'offsets_skipped')
				AND ($1 IS NULL OR d.reason = $1)
				AND ($2 IS NULL OR d.created_at >= $2)
				AND ($3 IS NULL OR d.id = ANY ($3))
			RETURNING d.kafka_topic, d.kafka_partition, d.kafka_offset, d.kafka_timestamp,
					  d.kafka_key, d.payload
		$src$, only_reason, since, ids, isolate => true);
	replayed := r.rows_read;
	-- gold follows in the same transaction
	PERFORM clickstream.refresh_gold();
	promoted := r.rows_promoted;
	duplicates := r.rows_duplicate;
	still_rejected := r.rows_rejected;
	UPDATE clickstream.refresh_history h
	SET status = 'succeeded', finished_at = clock_timestamp(), steps = 1,
		rows_read = replayed, rows_promoted = promoted, rows_duplicate = duplicates,
		rows_rejected = still_rejected, partitions_created = r.partitions_created
	WHERE h.run_id = replay_dead_letters.run_id;
END
$$;

COMMENT ON FUNCTION clickstream.replay_dead_letters(text, timestamptz, bigint[]) IS
'Run dead letters (optionally only one reason, only those created since a time, or only the given ids) through the silver parser again, after a fix of the payloads (UPDATE dead_letters SET payload = ...) or of a setting: valid ones are promoted (deduplicated), the rest go back to dead_letters with their new reason. Truncated and skipped-offset rows cannot be replayed. Recorded in refresh_history as kind replay.';

-- Scheduling with pg_cron -----------------------------------------------------

CREATE FUNCTION clickstream.schedule(every interval DEFAULT '1 minute')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	exact numeric := extract(epoch FROM every) / 60;
	minutes integer;
	spec text;
	job bigint;
BEGIN
	IF to_regnamespace('cron') IS NULL THEN
		RAISE EXCEPTION 'pg_cron is not installed in database %', current_database()
			USING HINT = 'Install postgresql-15-cron, add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, and run CREATE EXTENSION pg_cron here.';
	END IF;
	IF exact < 1 OR exact <> trunc(exact) OR exact > 1440 THEN
		RAISE EXCEPTION 'cannot schedule clickstream.refresh() every %', every
			USING HINT = 'pg_cron 1.4 schedules by the minute: use a whole number of minutes (1 minute is the default and the shortest), at most 1 day.';
	END IF;
	minutes := exact::integer;
	IF minutes = 1 THEN
		spec := '* * * * *';
	ELSIF minutes < 60 AND 60 % minutes = 0 THEN
		spec := format('*/%s * * * *', minutes);
	ELSIF minutes % 60 = 0 AND minutes < 1440 AND 24 % (minutes / 60) = 0 THEN
		spec := format('0 */%s * * *', minutes / 60);
	ELSIF minutes = 1440 THEN
		spec := '0 0 * * *';
	ELSE
		RAISE EXCEPTION 'cannot schedule clickstream.refresh() every %', every
			USING HINT = 'Use a divisor of an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 minutes), of a day (1, 2, 3, 4, 6, 8, 12 hours), or 1 day; or call cron.schedule yourself.';
	END IF;
	-- a named job: scheduling again updates it instead of adding one
	EXECUTE 'SELECT cron.schedule($1, $2, $3)'
	INTO job USING 'clickstream-refresh', spec, 'CALL clickstream.refresh()';
	RETURN job;
END
$$;

COMMENT ON FUNCTION clickstream.schedule(interval) IS
'Register CALL clickstream.refresh() with pg_cron as job clickstream-refresh, every given interval (default and minimum 1 minute: pg_cron 1.4 schedules by the minute). Idempotent: calling it again updates the one job. Returns the cron job id.';

CREATE FUNCTION clickstream.unschedule()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	found_job boolean;
BEGIN
	IF to_regnamespace('cron') IS NULL THEN
		RETURN false;
	END IF;
	EXECUTE 'SELECT EXISTS (SELECT 1 FROM cron.job WHERE jobname = $1 AND username = current_user)'
	INTO found_job USING 'clickstream-refresh';
	IF found_job THEN
		EXECUTE 'SELECT cron.unschedule($1)' USING 'clickstream-refresh';
	END IF;
	RETURN found_job;
END
$$;

COMMENT ON FUNCTION clickstream.unschedule() IS
'Remove the pg_cron job clickstream-refresh; returns false when there was none.';

-- DROP EXTENSION removes the job (src/drop.c): pg_cron keeps it in its own
-- table, where it would fail every minute once refresh() is gone.
CREATE FUNCTION clickstream.drop_cleanup()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'clickstream_drop_cleanup'
LANGUAGE C;

COMMENT ON FUNCTION clickstream.drop_cleanup() IS
'Event trigger function: when a DROP EXTENSION or DROP SCHEMA statement drops clickstream, remove this database''s pg_cron job clickstream-refresh first, in the same transaction.';

CREATE EVENT TRIGGER clickstream_drop_cleanup ON ddl_command_start
WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA')
EXECUTE FUNCTION clickstream.drop_cleanup();

COMMENT ON EVENT TRIGGER clickstream_drop_cleanup IS
'Removes the pg_cron job clickstream-refresh when the extension (or its schema) is dropped (clickstream.drop_cleanup()).';

REVOKE ALL ON FUNCTION clickstream.drop_cleanup() FROM PUBLIC;
