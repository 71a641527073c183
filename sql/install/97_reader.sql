-- The reader role: what dashboards (Grafana, Metabase) may read, and nothing
-- else.
--
-- CREATE EXTENSION creates the NOLOGIN role clickstream_reader when it does
-- not exist yet and grants it exactly what the dashboards read.  A
-- dashboard's login is a member of it:
--
--   CREATE ROLE grafana LOGIN PASSWORD '...' IN ROLE clickstream_reader;
--
-- Roles belong to the cluster, not to the extension: DROP EXTENSION keeps
-- the role and its members (only the grants go with the objects), and the
-- next CREATE EXTENSION grants again.
--
-- Granted below: the gold marts, sessions and the funnel tables; the live
-- views; the pipeline's status, workers, refresh history, quality results
-- and dead letters counted per day and reason; the functions those views
-- call as the reader, and the marts' conventions for panel SQL.
--
-- Private: bronze, dead_letters (payloads and keys), silver
-- (clickstream.events: panels read the marts; to let analysts read it,
-- GRANT SELECT ON clickstream.events to a role of your own, which covers
-- every day partition, later ones included, when read through the parent),
-- event_ids, positions and watermarks, touched, gold_state, the sets behind
-- the marts' distinct counts (one row per user), event_sessions and the
-- definition tables.  test/sql/reader.sql lists them and fails on a table or
-- view that is neither granted here nor listed there.
--
-- Functions are executable by PUBLIC unless revoked.  Those that change
-- state are revoked here (the internal ones where they are created); what
-- remains computes on its arguments, reads shared memory, or reads tables
-- with the caller's rights.

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'clickstream_reader') THEN
		CREATE ROLE clickstream_reader NOLOGIN;
		COMMENT ON ROLE clickstream_reader IS
		'Reads what the clickstream dashboards show (gold marts, sessions, funnels, live views, pipeline status); nothing raw, no writes. Created by CREATE EXTENSION clickstream; make dashboard logins members of it.';
	END IF;
END
$$;

GRANT USAGE ON SCHEMA clickstream TO clickstream_reader;

-- Gold: the marts, the sessions and the funnel tables.
GRANT SELECT ON
	clickstream.daily_metrics,
	clickstream.hourly_metrics,
	clickstream.category_daily,
	clickstream.product_daily,
	clickstream.products,
	clickstream.orders,
	clickstream.users,
	clickstream.active_users,
	clickstream.cohort_retention,
	clickstream.traffic_daily,
	clickstream.audience_daily,
	clickstream.pages_daily,
	clickstream.sessions,
	clickstream.daily_funnel,
	clickstream.funnel_by_category,
	clickstream.product_funnel,
	clickstream.high_interest_low_conversion
TO clickstream_reader;

-- Right now: views over silver and bronze, which they read with their
-- owner's rights; they show counts, never rows.
GRANT SELECT ON clickstream.live, clickstream.live_summary TO clickstream_reader;

-- Pipeline health.
GRANT SELECT ON
	clickstream.status,
	clickstream.workers,
	clickstream.refresh_history,
	clickstream.quality_results,
	clickstream.dead_letters_daily
TO clickstream_reader;

-- Functions a view calls run with the reader's rights: those of status,
-- workers, live and live_summary; and the marts' conventions, for panels.
GRANT EXECUTE ON FUNCTION
	clickstream.worker_partitions(),
	clickstream.worker_states(),
	clickstream.parse_event(bytea),
	clickstream.order_key(text, text),
	clickstream.local_day(timestamptz),
	clickstream.local_hour(timestamptz),
	clickstream.hour_of_day(timestamptz),
	clickstream.week_of(date),
	clickstream.label(text, text),
	clickstream.rate(numeric, numeric)
TO clickstream_reader;

-- What changes state, or reads all of silver, is for the extension's owner
-- (a superuser; pg_cron runs the refresh as the user who scheduled it).
-- GRANT EXECUTE to an operator role of your own where needed.
REVOKE ALL ON PROCEDURE clickstream.refresh(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.replay_dead_letters(text, timestamptz, bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.schedule(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.unschedule() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.check_quality(date) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.create_partitions(date[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.prune_history() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.verify_gold(date) FROM PUBLIC;
