-- Gold: funnel tables.  The funnel's steps live in one table,
-- clickstream.funnel_definition (40_funnel.sql).  Every session row of clickstream.sessions
-- carries the furthest step it reached (clickstream.funnel_agg over its
-- events), per product category and per product too.  The daily tables are
-- sums over sessions by session_date:
--
--   clickstream.daily_funnel          (day, step)
--   clickstream.funnel_by_category    (day, category, step)
--   clickstream.product_funnel        (day, product_id, category, step)
--   clickstream.high_interest_low_conversion   (day, product_id, category)
--
-- refresh_gold() (80_gold.sql) records every session it deletes or writes
-- (-1 / +1) in pg_temp.clickstream_session_delta; apply_funnel_delta() adds
-- those counts to the daily rows they belong to and recomputes the rates and
-- the high-interest list of just those rows.  Sums are exact, so the tables
-- always equal the same sums taken over a full recomputation of sessions.

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

-- The daily tables ------------------------------------------------------------------

CREATE TABLE clickstream.daily_funnel (
	day date NOT NULL,
	step integer NOT NULL,
	step_name text NOT NULL,
	sessions bigint NOT NULL,
	reached bigint NOT NULL,
	conversion_from_previous numeric,
	conversion_from_first numeric,
	conversion_overall numeric,
	PRIMARY KEY (day, step)
);

CREATE TABLE clickstream.funnel_by_category (
	day date NOT NULL,
	category text NOT NULL,
	step integer NOT NULL,
	step_name text NOT NULL,
	sessions bigint NOT NULL,
	reached bigint NOT NULL,
	conversion_from_previous numeric,
	conversion_from_first numeric,
	conversion_overall numeric,
	PRIMARY KEY (day, category, step)
);

CREATE TABLE clickstream.product_funnel (
	day date NOT NULL,
	product_id text NOT NULL,
	category text NOT NULL,
	step integer NOT NULL,
	step_name text NOT NULL,
	sessions bigint NOT NULL,
	reached bigint NOT NULL,
	conversion_from_previous numeric,
	conversion_from_first numeric,
	conversion_overall numeric,
	PRIMARY KEY (day, product_id, category, step)
);

CREATE TABLE clickstream.high_interest_low_conversion (
	day date NOT NULL,
	product_id text NOT NULL,
	category text NOT NULL,
	views bigint NOT NULL,
	carts bigint,
	purchases bigint NOT NULL,
	cart_rate numeric,
	conversion numeric NOT NULL,
	PRIMARY KEY (day, product_id, category)
);

COMMENT ON TABLE clickstream.daily_funnel IS
'Gold: the funnel of clickstream.funnel_definition per day (session_date: the day the session started, in clickstream.timezone), one row per day and step. Maintained by clickstream.refresh() from the sessions it changes; equal to the same counts over a full recomputation of sessions.';
COMMENT ON COLUMN clickstream.daily_funnel.sessions IS 'Sessions that started that day (the same in every step row of the day).';

COMMENT ON TABLE clickstream.funnel_by_category IS
'Gold: the funnel per product category and day. A session counts for each category its events carry; step 1 needs an event of the category, later steps take an event of the category or one without a category (begin_checkout carries none). Maintained by clickstream.refresh(), equal to a full recomputation.';
COMMENT ON COLUMN clickstream.funnel_by_category.category IS 'Product category.';
COMMENT ON COLUMN clickstream.funnel_by_category.sessions IS 'Sessions of the day with an event of the category.';

COMMENT ON TABLE clickstream.product_funnel IS
'Gold: the funnel per product and day, with the rule of clickstream.funnel_by_category (step 1 needs an event of the product, later steps take an event of the product or one without a product). The base of clickstream.high_interest_low_conversion. Maintained by clickstream.refresh(), equal to a full recomputation.';
COMMENT ON COLUMN clickstream.product_funnel.product_id IS 'Product.';
COMMENT ON COLUMN clickstream.product_funnel.category IS 'The category the product''s events carried in the session (the smallest, if several); '''' when none did.';
COMMENT ON COLUMN clickstream.product_funnel.sessions IS 'Sessions of the day with an event of the product.';

-- the columns the three funnel tables share
DO $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['daily_funnel', 'funnel_by_category', 'product_funnel'] LOOP
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.day IS %L', t,
			'Day the sessions started, in clickstream.timezone.');
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.step IS %L', t,
			'Step of clickstream.funnel_definition.');
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.step_name IS %L', t,
			'Its name.');
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.reached IS %L', t,
			'Of the sessions counted, those that reached this step (with the category or the product, in funnel_by_category and product_funnel).');
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.conversion_from_previous IS %L', t,
			'Step-to-step conversion: reached / reached of the previous step (for step 1: / sessions), 4 decimals; NULL when dividing by 0.');
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.conversion_from_first IS %L', t,
			'reached / reached of step 1 (the funnel''s own conversion, as PostHog reports it), 4 decimals; NULL when dividing by 0.');
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.conversion_overall IS %L', t,
			'Overall conversion: reached / sessions, 4 decimals (the last step''s is the session conversion rate).');
	END LOOP;
END
$$;

COMMENT ON TABLE clickstream.high_interest_low_conversion IS
'Gold: products that many sessions viewed or carted on a day, but few bought: views >= clickstream.interest_min_views or carts >= clickstream.interest_min_carts, and conversion <= clickstream.interest_max_conversion. Rows of clickstream.product_funnel; maintained by clickstream.refresh(), rebuilt when the thresholds change.';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.day IS 'Day the sessions started, in clickstream.timezone.';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.product_id IS 'Product.';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.category IS 'Its category, as in clickstream.product_funnel.';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.views IS 'Sessions that reached step 1 with the product (viewed it, with the default funnel).';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.carts IS 'Sessions that reached step 2 with it (added it to the cart); NULL for a one-step funnel.';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.purchases IS 'Sessions that reached the last step with it (bought it).';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.cart_rate IS 'carts / views, 4 decimals.';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.conversion IS 'purchases / views, 4 decimals.';

-- Maintenance -----------------------------------------------------------------------

-- Per-call scratch tables of the funnel deltas; emptied at every commit.
CREATE FUNCTION clickstream.funnel_scratch()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM clickstream.scratch_renew();
	-- the sessions a step removed (sign -1) and wrote (+1), whole: the
	-- funnel tables and the marts (70_marts.sql) take what they count
	IF to_regclass('pg_temp.clickstream_session_delta') IS NULL THEN
		CREATE TEMP TABLE clickstream_session_delta (
			sign integer NOT NULL,
			LIKE clickstream.sessions
		) ON COMMIT DELETE ROWS;
	END IF;
	IF to_regclass('pg_temp.clickstream_funnel_delta') IS NULL THEN
		CREATE TEMP TABLE clickstream_funnel_delta (
			kind text NOT NULL,
			day date NOT NULL,
			key text NOT NULL,
			category text NOT NULL,
			level integer NOT NULL,
			sessions bigint NOT NULL
		) ON COMMIT DELETE ROWS;
	END IF;
END
$$;

COMMENT ON FUNCTION clickstream.funnel_scratch() IS
'Internal: create the session''s scratch tables of the funnel deltas (pg_temp.clickstream_session_delta: the sessions a step removed and wrote, with a sign; pg_temp.clickstream_funnel_delta: what they count netted per day, key and level).';

-- The settings high_interest_low_conversion depends on, as one value.
CREATE FUNCTION clickstream.interest_rules()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT jsonb_build_object(
		'min_views', current_setting('clickstream.interest_min_views')::bigint,
		'min_carts', current_setting('clickstream.interest_min_carts')::bigint,
		'max_conversion', current_setting('clickstream.interest_max_conversion')::numeric)
$$;

COMMENT ON FUNCTION clickstream.interest_rules() IS
'The thresholds clickstream.high_interest_low_conversion was built with (clickstream.interest_*), as one value.';

-- Add signed session counts to one funnel table.  deltas: a query returning
-- the key columns of the table, level (the step the sessions reached with
-- that key) and sign (how many sessions more, or fewer when negative).
CREATE FUNCTION clickstream.funnel_add(target regclass, keys text[], deltas text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cols text := (SELECT string_agg(format('%I', k), ', ') FROM unnest(keys) k);
	d_cols text := (SELECT string_agg(format('d.%I', k), ', ') FROM unnest(keys) k);
	a_cols text := (SELECT string_agg(format('a.%I', k), ', ') FROM unnest(keys) k);
	same_key text := (SELECT string_agg(format('t.%1$I = a.%1$I', k), ' AND ') FROM unnest(keys) k);
BEGIN
	-- the new counts of every step of the keys touched, with their rates
	EXECUTE format($q$
		INSERT INTO %1$s AS t (%2$s, step, step_name, sessions, reached,
			conversion_from_previous, conversion_from_first, conversion_overall)
		SELECT %2$s, step, step_name, sessions, reached,
			   round(reached::numeric / nullif(coalesce(lag(reached) OVER w, sessions), 0), 4),
			   round(reached::numeric / nullif(first_value(reached) OVER w, 0), 4),
			   round(reached::numeric / nullif(sessions, 0), 4)
		FROM (
			SELECT %6$s, a.step, a.step_name,
				   coalesce(t.sessions, 0) + a.sessions AS sessions,
				   coalesce(t.reached, 0) + a.reached AS reached
			FROM (
				SELECT %3$s, f.step, f.name AS step_name, sum(d.sign) AS sessions,
					   coalesce(sum(d.sign) FILTER (WHERE d.level >= f.step), 0) AS reached
				FROM (%4$s) d
				CROSS JOIN clickstream.funnel_definition f
				GROUP BY %3$s, f.step, f.name
			) a
			LEFT JOIN %1$s t ON %5$s AND t.step = a.step
		) d
		WINDOW w AS (PARTITION BY %2$s ORDER BY step)
		ON CONFLICT (%2$s, step) DO UPDATE
		SET step_name = excluded.step_name,
			sessions = excluded.sessions,
			reached = excluded.reached,
			conversion_from_previous = excluded.conversion_from_previous,
			conversion_from_first = excluded.conversion_from_first,
			conversion_overall = excluded.conversion_overall
	$q$, target, cols, d_cols, deltas, same_key, a_cols);
	-- keys no session counts for any more
	EXECUTE format($q$
		DELETE FROM %1$s t
		USING (SELECT DISTINCT %2$s FROM (%3$s) d) a
		WHERE %4$s AND t.sessions = 0
	$q$, target, d_cols, deltas, same_key);
END
$$;

COMMENT ON FUNCTION clickstream.funnel_add(regclass, text[], text) IS
'Internal: add signed session counts (a query of key columns, level, sign) to a funnel table, with the rates of the keys touched, and drop the keys left without sessions.';

-- Recompute the high-interest rows of some (day, product_id, category) keys,
-- or of all when keys is NULL.
CREATE FUNCTION clickstream.interest_update(keys text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	last_step integer := (SELECT max(step) FROM clickstream.funnel_definition);
	rules jsonb := clickstream.interest_rules();
BEGIN
	IF keys IS NULL THEN
		DELETE FROM clickstream.high_interest_low_conversion;
		keys := 'SELECT DISTINCT day, product_id, category FROM clickstream.product_funnel';
	ELSE
		EXECUTE format($q$
			DELETE FROM clickstream.high_interest_low_conversion t
			USING (SELECT DISTINCT d.day, d.product_id, d.category FROM (%s) d) a
			WHERE t.day = a.day AND t.product_id = a.product_id AND t.category = a.category
		$q$, keys);
	END IF;
	EXECUTE format($q$
		INSERT INTO clickstream.high_interest_low_conversion
		SELECT x.day, x.product_id, x.category, x.views, x.carts, x.purchases,
			   round(x.carts::numeric / x.views, 4), round(x.purchases::numeric / x.views, 4)
		FROM (
			SELECT t.day, t.product_id, t.category,
				   max(t.reached) FILTER (WHERE t.step = 1) AS views,
				   max(t.reached) FILTER (WHERE t.step = 2) AS carts,
				   max(t.reached) FILTER (WHERE t.step = %2$s) AS purchases
			FROM (SELECT DISTINCT d.day, d.product_id, d.category FROM (%1$s) d) a
			JOIN clickstream.product_funnel t
				ON t.day = a.day AND t.product_id = a.product_id AND t.category = a.category
			GROUP BY t.day, t.product_id, t.category
		) x
		WHERE x.views > 0
			AND (x.views >= %3$s OR x.carts >= %4$s)
			AND x.purchases <= %5$s * x.views
	$q$, keys, last_step, rules ->> 'min_views', rules ->> 'min_carts', rules ->> 'max_conversion');
	UPDATE clickstream.gold_state SET interest_rules = rules;
END
$$;

COMMENT ON FUNCTION clickstream.interest_update(text) IS
'Internal: recompute the clickstream.high_interest_low_conversion rows of the (day, product_id, category) keys a query returns (all when NULL) from clickstream.product_funnel and the clickstream.interest_* thresholds.';

-- Apply pg_temp.clickstream_session_delta to every funnel table: first net
-- it per key and level (a session rewritten unchanged cancels out), then add
-- it to each table.
CREATE FUNCTION clickstream.apply_funnel_delta()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM pg_temp.clickstream_funnel_delta;
	INSERT INTO pg_temp.clickstream_funnel_delta
	SELECT x.kind, x.day, x.key, x.category, x.level, sum(x.sign)
	FROM (
		SELECT 'day' AS kind, d.session_date AS day, '' AS key, '' AS category,
			   d.funnel_level AS level, d.sign
		FROM pg_temp.clickstream_session_delta d
		UNION ALL
		-- (a session rewritten with the same funnels cancels before its
		-- funnels are taken apart)
		SELECT 'category', d.session_date, c.key, c.key, c.value::integer, d.sign
		FROM (SELECT d.session_date, d.category_funnel, sum(d.sign) AS sign
			  FROM pg_temp.clickstream_session_delta d
			  GROUP BY 1, 2 HAVING sum(d.sign) <> 0) d,
			 jsonb_each_text(d.category_funnel) c
		UNION ALL
		SELECT 'product', d.session_date, p.key, coalesce(p.value ->> 1, ''),
			   (p.value ->> 0)::integer, d.sign
		FROM (SELECT d.session_date, d.product_funnel, sum(d.sign) AS sign
			  FROM pg_temp.clickstream_session_delta d
			  GROUP BY 1, 2 HAVING sum(d.sign) <> 0) d,
			 jsonb_each(d.product_funnel) p
	) x
	GROUP BY x.kind, x.day, x.key, x.category, x.level
	HAVING sum(x.sign) <> 0;

	PERFORM clickstream.funnel_add('clickstream.daily_funnel', ARRAY['day'], $q$
		SELECT d.day, d.level, d.sessions AS sign
		FROM pg_temp.clickstream_funnel_delta d WHERE d.kind = 'day'$q$);
	PERFORM clickstream.funnel_add('clickstream.funnel_by_category', ARRAY['day', 'category'], $q$
		SELECT d.day, d.category, d.level, d.sessions AS sign
		FROM pg_temp.clickstream_funnel_delta d WHERE d.kind = 'category'$q$);
	PERFORM clickstream.funnel_add('clickstream.product_funnel', ARRAY['day', 'product_id', 'category'], $q$
		SELECT d.day, d.key AS product_id, d.category, d.level, d.sessions AS sign
		FROM pg_temp.clickstream_funnel_delta d WHERE d.kind = 'product'$q$);
	PERFORM clickstream.interest_update($q$
		SELECT d.day, d.key AS product_id, d.category
		FROM pg_temp.clickstream_funnel_delta d WHERE d.kind = 'product'$q$);
END
$$;

COMMENT ON FUNCTION clickstream.apply_funnel_delta() IS
'Internal (clickstream.refresh_gold()): net what the sessions removed (-1) and written (+1) in this step counted, per day, key and level (pg_temp.clickstream_funnel_delta), add it to daily_funnel, funnel_by_category and product_funnel, and update high_interest_low_conversion for the products touched.';

-- Rebuild every funnel table from clickstream.sessions.
CREATE FUNCTION clickstream.rebuild_funnels()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM clickstream.funnel_scratch();
	DELETE FROM clickstream.daily_funnel;
	DELETE FROM clickstream.funnel_by_category;
	DELETE FROM clickstream.product_funnel;
	DELETE FROM clickstream.high_interest_low_conversion;
	DELETE FROM pg_temp.clickstream_session_delta;
	INSERT INTO pg_temp.clickstream_session_delta
	SELECT 1, s.* FROM clickstream.sessions s;
	PERFORM clickstream.apply_funnel_delta();
	DELETE FROM pg_temp.clickstream_session_delta;
END
$$;

COMMENT ON FUNCTION clickstream.rebuild_funnels() IS
'Internal (clickstream.rebuild_gold()): rebuild daily_funnel, funnel_by_category, product_funnel and high_interest_low_conversion from clickstream.sessions.';

-- Full recomputations, for clickstream.verify_gold(): the same sums taken
-- over all of clickstream.sessions.
CREATE FUNCTION clickstream.recompute_funnels()
RETURNS TABLE (kind text, day date, key text, category text, step integer, step_name text,
	sessions bigint, reached bigint, conversion_from_previous numeric,
	conversion_from_first numeric, conversion_overall numeric)
LANGUAGE sql STABLE
AS $$
	WITH counted AS (
		SELECT 'daily' AS kind, s.session_date AS day, '' AS key, '' AS category,
			   s.funnel_level AS level
		FROM clickstream.sessions s
		UNION ALL
		SELECT 'category', s.session_date, c.key, c.key, c.value::integer
		FROM clickstream.sessions s, jsonb_each_text(s.category_funnel) c
		UNION ALL
		SELECT 'product', s.session_date, p.key, coalesce(p.value ->> 1, ''), (p.value ->> 0)::integer
		FROM clickstream.sessions s, jsonb_each(s.product_funnel) p),
	sums AS (
		SELECT c.kind, c.day, c.key, c.category, f.step, f.name, count(*) AS sessions,
			   count(*) FILTER (WHERE c.level >= f.step) AS reached
		FROM counted c CROSS JOIN clickstream.funnel_definition f
		GROUP BY c.kind, c.day, c.key, c.category, f.step, f.name)
	SELECT s.kind, s.day, s.key, s.category, s.step, s.name, s.sessions, s.reached,
		   round(s.reached::numeric / nullif(coalesce(lag(s.reached) OVER w, s.sessions), 0), 4),
		   round(s.reached::numeric / nullif(first_value(s.reached) OVER w, 0), 4),
		   round(s.reached::numeric / nullif(s.sessions, 0), 4)
	FROM sums s
	WINDOW w AS (PARTITION BY s.kind, s.day, s.key, s.category ORDER BY s.step)
$$;

COMMENT ON FUNCTION clickstream.recompute_funnels() IS
'Full recomputation of the funnel tables from clickstream.sessions, one row per kind (daily, category, product), day, key, category and step.';

CREATE FUNCTION clickstream.recompute_high_interest_low_conversion()
RETURNS SETOF clickstream.high_interest_low_conversion
LANGUAGE sql STABLE
AS $$
	SELECT x.day, x.product_id, x.category, x.views, x.carts, x.purchases,
		   round(x.carts::numeric / x.views, 4), round(x.purchases::numeric / x.views, 4)
	FROM (SELECT f.day, f.key AS product_id, f.category,
				 max(f.reached) FILTER (WHERE f.step = 1) AS views,
				 max(f.reached) FILTER (WHERE f.step = 2) AS carts,
				 max(f.reached) FILTER (WHERE f.step = (SELECT max(d.step) FROM clickstream.funnel_definition d)) AS purchases
		  FROM clickstream.recompute_funnels() f
		  WHERE f.kind = 'product'
		  GROUP BY f.day, f.key, f.category) x
	WHERE x.views > 0
		AND (x.views >= current_setting('clickstream.interest_min_views')::bigint
			 OR x.carts >= current_setting('clickstream.interest_min_carts')::bigint)
		AND x.purchases <= current_setting('clickstream.interest_max_conversion')::numeric * x.views
$$;

COMMENT ON FUNCTION clickstream.recompute_high_interest_low_conversion() IS
'Full recomputation of clickstream.high_interest_low_conversion from clickstream.sessions and the clickstream.interest_* thresholds.';

REVOKE ALL ON FUNCTION clickstream.funnel_scratch() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.funnel_add(regclass, text[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.interest_update(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.apply_funnel_delta() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.rebuild_funnels() FROM PUBLIC;

-- Quality check ----------------------------------------------------------------------

INSERT INTO clickstream.quality_checks (name, layer, severity, description, query, builtin) VALUES
('daily_funnel_matches_sessions', 'gold', 'error',
 'clickstream.daily_funnel holds, per day and step, the number of sessions of that day and of those that reached the step.',
 $q$SELECT count(*) FROM (
        SELECT s.session_date AS day, f.step, count(*) AS sessions,
               count(*) FILTER (WHERE s.funnel_level >= f.step) AS reached
        FROM clickstream.sessions s CROSS JOIN clickstream.funnel_definition f
        WHERE $1::date IS NULL OR s.session_date >= $1::date
        GROUP BY 1, 2) s
    FULL JOIN (
        SELECT day, step, sessions, reached FROM clickstream.daily_funnel
        WHERE $1::date IS NULL OR day >= $1::date) d
    USING (day, step)
    WHERE s.sessions IS DISTINCT FROM d.sessions OR s.reached IS DISTINCT FROM d.reached$q$, true);
