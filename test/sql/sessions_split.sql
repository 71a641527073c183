-- Sessions: the split of a user's range (late events and events after the
-- start of the last session in one step), on an adversarial random stream:
-- few users,
-- each with a live session growing across batches, late events at chosen
-- distances before it (at session starts and ends, at the timeout exactly
-- and one microsecond past it, hours before), ties in ts; gold checked
-- whole after every refresh, under each rule.
CREATE EXTENSION clickstream;
SET clickstream.refresh_batch_size = 1000;
SET timezone = 'UTC';
SET regress.topic = 'adv';
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/feed_events.sql
\i :abs_srcdir/sql/include/session_events.sql

-- one event's payload at ts for usr, random type, product, campaign
CREATE FUNCTION rev(usr text, t timestamptz, n integer) RETURNS text
LANGUAGE sql AS $$
	SELECT sev('e' || lpad(floor(random() * 100)::text, 2, '0') || '_' || n, usr,
			   to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
			   (ARRAY['page_view', 'page_view', 'page_view', 'add_to_cart', 'begin_checkout', 'purchase'])[1 + floor(random() * 6)::int],
			   CASE WHEN random() < 0.15 THEN (ARRAY['google', 'mail'])[1 + floor(random() * 2)::int] END,
			   CASE WHEN random() < 0.7 THEN 'p' || (1 + floor(random() * 4)::int) END,
			   CASE WHEN random() < 0.7 THEN 'c' || floor(random() * 2)::int END)
$$;
-- a gap between live events: mostly within the timeout, some exactly at it,
-- one microsecond past it, or far past it
CREATE FUNCTION gap(tmo interval) RETURNS interval
LANGUAGE plpgsql AS $$
DECLARE r float8 := random();
BEGIN
	RETURN CASE WHEN r < 0.70 THEN random() * tmo * 0.6
				WHEN r < 0.76 THEN tmo
				WHEN r < 0.82 THEN tmo + interval '1 microsecond'
				WHEN r < 0.88 THEN interval '0'
				ELSE tmo * (1 + random() * 4) END;
END $$;
-- a late event's ts: relative to a session of the user in gold (its start
-- or end), or to the last session's start
CREATE FUNCTION late_ts(usr text, tmo interval) RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
	s record;
	r float8 := random();
	k float8 := random();
	base timestamptz;
BEGIN
	IF r < 0.5 THEN
		SELECT * INTO s FROM clickstream.sessions WHERE user_id = usr
		ORDER BY session_start DESC, first_event_id DESC LIMIT 1;
	ELSE
		SELECT * INTO s FROM clickstream.sessions WHERE user_id = usr
		ORDER BY random() LIMIT 1;
	END IF;
	IF s IS NULL THEN
		RETURN NULL;
	END IF;
	IF r < 0.8 THEN
		base := s.session_start;
		RETURN base - CASE WHEN k < 0.12 THEN interval '0'
						   WHEN k < 0.24 THEN tmo
						   WHEN k < 0.36 THEN tmo + interval '1 microsecond'
						   WHEN k < 0.46 THEN tmo - interval '1 microsecond'
						   WHEN k < 0.56 THEN interval '1 microsecond'
						   WHEN k < 0.75 THEN random() * tmo * 2
						   ELSE random() * interval '8 hours' END;
	ELSE
		base := s.session_end;
		RETURN base + CASE WHEN k < 0.2 THEN interval '0'
						   WHEN k < 0.4 THEN tmo
						   WHEN k < 0.6 THEN tmo + interval '1 microsecond'
						   WHEN k < 0.8 THEN -random() * (s.session_end - s.session_start)
						   ELSE random() * tmo * 3 END;
	END IF;
END $$;

-- what each step's gold did, logged from refresh_gold()'s scratch tables
-- (emptied at commit): a user with two ranges in one step was split
SELECT clickstream.gold_scratch();
CREATE TEMP TABLE dlog (tx xid8, run integer, user_id text, from_ts timestamptz, from_id text,
	to_ts timestamptz);
CREATE TEMP TABLE alog (tx xid8, user_id text);
CREATE FUNCTION log_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO dlog VALUES (pg_current_xact_id(), current_setting('adv.run')::int, NEW.user_id,
		NEW.from_ts, NEW.from_id, NEW.to_ts);
	RETURN NULL;
END $$;
CREATE FUNCTION log_append() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO alog VALUES (pg_current_xact_id(), NEW.user_id);
	RETURN NULL;
END $$;
CREATE TRIGGER log_dirty AFTER INSERT ON pg_temp.clickstream_dirty FOR EACH ROW EXECUTE FUNCTION log_dirty();
CREATE TRIGGER log_append AFTER INSERT ON pg_temp.clickstream_append FOR EACH ROW EXECUTE FUNCTION log_append();
CREATE TEMP TABLE clk (user_id text PRIMARY KEY, cur timestamptz);
CREATE TEMP TABLE fed (run integer, batch integer, payload text);
CREATE TEMP TABLE rounds (run integer, batch integer, events integer, late integer,
	bad_marts bigint, diff bigint);
CREATE TEMP TABLE runs (run integer, label text, first_run bigint, last_run bigint);
CREATE PROCEDURE adv(run integer, label text, seed float8, nusers integer, nbatches integer,
	p_late float8, start timestamptz DEFAULT '2026-03-07 20:00Z')
LANGUAGE plpgsql AS $$
DECLARE
	tmo interval := current_setting('clickstream.session_timeout')::interval;
	b integer;
	u record;
	i integer;
	n integer := 0;
	t timestamptz;
	evs text[];
	nlate integer;
	h0 bigint;
BEGIN
	PERFORM setseed(seed);
	PERFORM set_config('adv.run', run::text, false);
	DELETE FROM clk;
	INSERT INTO clk SELECT run || 'u' || g, start + random() * interval '1 hour'
	FROM generate_series(1, nusers) g;
	SELECT coalesce(max(run_id), 0) INTO h0 FROM clickstream.refresh_history;
	FOR b IN 1 .. nbatches LOOP
		evs := '{}';
		nlate := 0;
		FOR u IN SELECT * FROM clk ORDER BY user_id LOOP
			IF random() < 0.15 THEN
				CONTINUE;
			END IF;
			-- the live session goes on
			t := u.cur;
			FOR i IN 1 .. floor(random() * 4)::int LOOP
				t := t + gap(tmo);
				n := n + 1;
				evs := evs || rev(u.user_id, t, n);
				-- a tie with the previous one
				IF random() < 0.1 THEN
					n := n + 1;
					evs := evs || rev(u.user_id, t, n);
				END IF;
			END LOOP;
			UPDATE clk SET cur = t WHERE user_id = u.user_id;
			-- late ones
			IF random() < p_late THEN
				FOR i IN 1 .. 1 + floor(random() * 2)::int LOOP
					t := late_ts(u.user_id, tmo);
					IF t IS NOT NULL THEN
						n := n + 1;
						nlate := nlate + 1;
						evs := evs || rev(u.user_id, t, n);
					END IF;
				END LOOP;
			END IF;
		END LOOP;
		-- in random order
		evs := ARRAY(SELECT x FROM unnest(evs) x ORDER BY random());
		INSERT INTO fed SELECT run, b, x FROM unnest(evs) x;
		PERFORM feed_events(floor(random() * 3)::int, evs);
		COMMIT;
		CALL clickstream.refresh();
		INSERT INTO rounds SELECT run, b, cardinality(evs), nlate,
			(SELECT count(*) FROM clickstream.verify_gold() WHERE NOT ok), sessions_diff();
		COMMIT;
		IF (SELECT bad_marts + diff FROM rounds r WHERE r.run = adv.run AND r.batch = b) > 0 THEN
			RAISE NOTICE 'run % batch %: gold differs', run, b;
			EXIT;
		END IF;
	END LOOP;
	INSERT INTO runs SELECT run, label, h0 + 1, max(run_id) FROM clickstream.refresh_history;
END $$;

\set rules 'SELECT pg_reload_conf(); SELECT pg_sleep(0.5);'
-- default rules, in steps of about five events (1 kB); the same stream
-- without late events
SET clickstream.refresh_batch_bytes = 1;
CALL adv(1, 'default, small steps', 0.11, 15, 25, 0.6);
RESET clickstream.refresh_batch_bytes;
CALL adv(2, 'default', 0.12, 15, 25, 0.6);
CALL adv(3, 'default, no late events', 0.12, 15, 25, 0);
ALTER SYSTEM SET clickstream.session_timeout = '10min';
ALTER SYSTEM SET clickstream.session_max_duration = '1h';
:rules
CALL adv(4, 'timeout 10min, max 1h', 0.22, 15, 25, 0.6);
ALTER SYSTEM RESET clickstream.session_timeout;
ALTER SYSTEM RESET clickstream.session_max_duration;
ALTER SYSTEM SET clickstream.timezone = 'America/New_York';
ALTER SYSTEM SET clickstream.session_split_at_midnight = on;
ALTER SYSTEM SET clickstream.session_split_on_campaign = on;
:rules
CALL adv(5, 'New York, midnight, campaign', 0.33, 15, 25, 0.6, '2026-03-08 02:00Z');
ALTER SYSTEM RESET clickstream.timezone;
ALTER SYSTEM RESET clickstream.session_split_at_midnight;
ALTER SYSTEM RESET clickstream.session_split_on_campaign;
:rules

-- gold equal to its recomputation after every refresh; users split often
-- (two ranges in one step), and their last session extended often where
-- the append path applies (not with the midnight or campaign rule)
WITH sp AS (SELECT tx, run, user_id, count(*) AS ranges FROM dlog GROUP BY tx, run, user_id),
s AS (SELECT sp.run, count(*) FILTER (WHERE ranges = 2) AS splits,
			 count(*) FILTER (WHERE ranges = 2 AND EXISTS (
				SELECT 1 FROM alog a WHERE a.tx = sp.tx AND a.user_id = sp.user_id)) AS split_extended,
			 count(*) FILTER (WHERE ranges > 2) AS more
	  FROM sp GROUP BY sp.run)
SELECT r.run, x.label, count(*) AS refreshes, max(bad_marts) AS bad_marts, max(diff) AS diff,
	   sum(late) > 0 AS late, min(s.splits) > 20 AS split_often, min(s.split_extended) > 10 AS extended_often,
	   min(s.more) AS more_than_two,
	   (SELECT sum(h.sessions_extended) FROM clickstream.refresh_history h
		WHERE h.run_id BETWEEN x.first_run AND x.last_run) > 50 AS sessions_extended
FROM rounds r JOIN runs x USING (run) LEFT JOIN s USING (run)
GROUP BY r.run, x.label, x.first_run, x.last_run ORDER BY r.run;
CALL clickstream.refresh();
SELECT mart, missing, unexpected FROM clickstream.verify_gold() WHERE NOT ok;

DROP EXTENSION clickstream;
DROP FUNCTION feed_events(int, text[]);
