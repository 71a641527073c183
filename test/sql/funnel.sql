-- funnel_agg, funnel_steps, retention: semantics case by case, errors,
-- NULLs, 64+ steps, parallel plans, and a randomized comparison with a
-- per-attempt reference implementation in PL/pgSQL.
CREATE EXTENSION IF NOT EXISTS clickstream;
SET search_path = clickstream, public;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

-- f(group, minute, event_type): events at 2026-01-01 10:00 + minute
CREATE TEMP TABLE f (g int, m numeric, e text);
CREATE TEMP VIEW fv AS
  SELECT g, timestamptz '2026-01-01 10:00' + m * interval '1 minute' AS ts, e FROM f;

-- one funnel over view -> cart -> purchase, per group, in every mode
CREATE FUNCTION show(opts text, win interval DEFAULT '1 hour') RETURNS TABLE (g int, level int, steps text)
LANGUAGE sql AS $$
  SELECT g, funnel_agg(ts, win, opts, e = 'v', e = 'c', e = 'p'),
         array_to_string(ARRAY(SELECT to_char(x, 'MI') FROM unnest((funnel_steps(ts, win, opts, e = 'v', e = 'c', e = 'p')).step_ts) x), ' ')
  FROM fv GROUP BY g ORDER BY g
$$;

-- Basics: complete, window exceeded, restarted attempt that does better,
-- a window exactly equal to the window, ties
INSERT INTO f VALUES
  (1, 0, 'v'), (1, 10, 'c'), (1, 20, 'p'),          -- 3
  (2, 0, 'v'), (2, 10, 'c'), (2, 70, 'p'),          -- 2: purchase out of the window
  (3, 0, 'v'), (3, 50, 'c'), (3, 55, 'v'), (3, 65, 'c'), (3, 80, 'p'),  -- 3: second attempt
  (4, 0, 'v'), (4, 30, 'c'), (4, 60, 'p'),          -- 3: exactly 60 minutes
  (5, 0, 'v'), (5, 30, 'c'), (5, 60.0001, 'p'),     -- 2: 60 min 6 ms
  (6, 5, 'p'), (6, 5, 'c'), (6, 5, 'v'),            -- 3: ties, taken in step order
  (7, 0, 'c'), (7, 1, 'p'),                         -- 0: no step 1
  (8, 0, 'v'), (8, 1, 'p'), (8, 2, 'c');            -- 2: purchase before the cart
SELECT * FROM show('');

-- Input order does not matter (ORDER BY inside the aggregate)
SELECT g, funnel_agg(ts, '1 hour', e = 'v', e = 'c', e = 'p' ORDER BY ts DESC, e) AS desc_order,
          funnel_agg(ts, '1 hour', e = 'v', e = 'c', e = 'p' ORDER BY md5(e || ts)) AS hashed_order
FROM fv GROUP BY g ORDER BY g;

-- The modes, each on the case that tells it apart
TRUNCATE f;
INSERT INTO f VALUES
  (1, 0, 'v'), (1, 1, 'c'), (1, 2, 'x'), (1, 3, 'p'),               -- x between: strict_order 2
  (2, 0, 'v'), (2, 1, 'c'), (2, 2, 'c'), (2, 3, 'p'),               -- repeated c: strict_deduplication 2
  (3, 0, 'v'), (3, 1, 'c'), (3, 2, 'v'), (3, 3, 'p'),               -- repeated step 1 is a new attempt, not a repeat
  (4, 0, 'v'), (4, 1, 'c'), (4, 1, 'p');                            -- same ts: strict_increase 2
SELECT 'default' AS mode, * FROM show('')
UNION ALL SELECT 'strict_order', * FROM show('strict_order')
UNION ALL SELECT 'strict_deduplication', * FROM show('strict_deduplication')
UNION ALL SELECT 'strict_increase', * FROM show('strict_increase')
ORDER BY 2, 1;

-- strict_once: one row matching several steps
CREATE TEMP TABLE once (ts timestamptz, a bool, b bool, c bool);
INSERT INTO once VALUES ('2026-01-01 10:00', true, true, false), ('2026-01-01 10:01', false, true, true);
SELECT funnel_agg(ts, '1 hour', a, b, c) AS plain,               -- 3: row 1 does steps 1-2, row 2 step 3
       funnel_agg(ts, '1 hour', 'strict_once', a, b, c) AS once, -- 2: one step per row
       funnel_agg(ts, '1 hour', 'strict_increase', a, b, c) AS incr
FROM once;
-- strict_order with a row matching no condition at all (only kept under strict_order)
SELECT funnel_agg(ts, '1 hour', 'strict_order', a, c) AS order_ac,   -- 2
       funnel_agg(ts, '1 hour', 'strict_order', a, b, c) AS order_abc,  -- 3
       funnel_agg(ts, '1 hour', 'strict_order', c, a) AS order_ca
FROM once;
-- options are case-insensitive, spaces allowed, combined
SELECT funnel_agg(ts, '1 hour', ' Strict_Once , STRICT_ORDER ', a, b, c) FROM once;

-- Exclusions: view -> cart -> purchase, remove between cart and purchase
TRUNCATE f;
INSERT INTO f VALUES
  (1, 0, 'v'), (1, 1, 'c'), (1, 2, 'r'), (1, 3, 'p'),               -- 2: removed, then purchase
  (2, 0, 'v'), (2, 1, 'c'), (2, 2, 'r'), (2, 3, 'c'), (2, 4, 'p'),  -- 3: added again after the removal
  (3, 0, 'v'), (3, 1, 'r'), (3, 2, 'c'), (3, 3, 'p'),               -- 3: removal before the cart
  (4, 0, 'v'), (4, 1, 'c'), (4, 2, 'p'), (4, 3, 'r'),               -- 3: removal after the purchase
  (5, 0, 'v'), (5, 1, 'c'), (5, 1, 'r'), (5, 2, 'p'),               -- 2: same ts: cart before removal
  (6, 0, 'v'), (6, 1, 'c'), (6, 2, 'p'), (6, 2, 'r');               -- 3: same ts: purchase before removal
SELECT g, funnel_agg(ts, '1 hour', e = 'v', e = 'c', e = 'p') AS plain,
          funnel_agg(ts, '1 hour', 'exclude(2,3)', e = 'v', e = 'c', e = 'p', e = 'r') AS excl_2_3,
          funnel_agg(ts, '1 hour', 'exclude(1, 3)', e = 'v', e = 'c', e = 'p', e = 'r') AS excl_1_3,
          funnel_agg(ts, '1 hour', 'exclude', e = 'v', e = 'c', e = 'p', e = 'r') AS excl_all,
          (funnel_steps(ts, '1 hour', 'exclude(2,3)', e = 'v', e = 'c', e = 'p', e = 'r')).step_ts
FROM fv GROUP BY g ORDER BY g;
-- two exclusions, each with its own condition, in the order of the options
SELECT g, funnel_agg(ts, '1 hour', 'exclude(1,2), exclude(2,3)',
                     e = 'v', e = 'c', e = 'p', e = 'x', e = 'r') AS two
FROM fv GROUP BY g ORDER BY g;

-- funnel_steps: time to convert, and which attempt is reported
TRUNCATE f;
INSERT INTO f VALUES
  (1, 0, 'v'), (1, 5, 'v'), (1, 7, 'c'), (1, 9, 'c'), (1, 20, 'p'),  -- attempts at 0 and 5 finish together: the later one
  (2, 0, 'v'), (2, 10, 'c'), (2, 20, 'v'), (2, 30, 'c');             -- the first to reach step 2
SELECT g, (s).level, (s).step_ts, (s).time_to_convert
FROM (SELECT g, funnel_steps(ts, '1 hour', e = 'v', e = 'c', e = 'p') AS s FROM fv GROUP BY g) q ORDER BY g;
SELECT funnel_steps(ts, '1 hour', e = 'v') FROM fv WHERE g = 0;    -- no rows: NULL
SELECT funnel_steps(ts, '1 hour', e = 'zzz', e = 'v') FROM fv;     -- no step 1: level 0

-- NULLs: a NULL ts is ignored (not even an interruption under strict_order),
-- a NULL condition is false
CREATE TEMP TABLE n (ts timestamptz, a bool, b bool);
INSERT INTO n VALUES ('2026-01-01 10:00', true, false), (NULL, false, false),
                     ('2026-01-01 10:01', NULL, NULL), ('2026-01-01 10:02', NULL, true);
SELECT funnel_agg(ts, '1 hour', a, b) AS plain,
       funnel_agg(ts, '1 hour', 'strict_order', a, b) AS strict_order,       -- 1: the NULL/NULL row interrupts
       funnel_agg(ts, '1 hour', 'strict_order', a, b) FILTER (WHERE ts IS NULL OR a OR b) AS order_without_it
FROM n;
SELECT funnel_agg(ts, '1 hour', a, b) FROM n WHERE ts IS NULL;   -- only NULL ts: 0
SELECT funnel_agg(ts, '1 hour', a, b) FROM n WHERE false;        -- no rows: NULL
-- infinite timestamps are ordinary extreme values
SELECT funnel_agg(ts, '1 hour', a, b) FROM (VALUES ('-infinity'::timestamptz, true, false),
  ('-infinity', false, true), ('infinity', true, true)) v(ts, a, b);
SELECT funnel_agg(ts, '36500 days 1 hour', a, b) FROM n;       -- long windows are fine

-- Errors
SELECT funnel_agg(ts, '-1 minute', a, b) FROM n;
SELECT funnel_agg(ts, '1 month', a, b) FROM n;
SELECT funnel_agg(ts, NULL, a, b) FROM n;
SELECT funnel_agg(ts, '1 hour', NULL, a, b) FROM n;
SELECT funnel_agg(ts, '1 hour', VARIADIC NULL::bool[]) FROM n;
SELECT funnel_agg(ts, '1 hour', VARIADIC '{}'::bool[]) FROM n;
SELECT funnel_agg(ts, '1 hour', VARIADIC ARRAY[[a, b]]) FROM n;
SELECT funnel_agg(ts, '1 hour', 'strict', a, b) FROM n;
SELECT funnel_agg(ts, '1 hour', 'strict_order strict_once', a, b) FROM n;
SELECT funnel_agg(ts, '1 hour', 'exclude(2,2)', a, b, b) FROM n;
SELECT funnel_agg(ts, '1 hour', 'exclude(1,3)', a, b, b) FROM n;
SELECT funnel_agg(ts, '1 hour', 'exclude(1 3)', a, b, b) FROM n;
SELECT funnel_agg(ts, '1 hour', 'exclude', a, b) FROM n;
SELECT funnel_agg(ts, '1 hour', ',', a, b) FROM n;
-- mismatched arguments within a group
SELECT funnel_agg(ts, CASE WHEN a THEN interval '1 hour' ELSE '2 hours' END, a, b) FROM n;
SELECT funnel_agg(ts, '1 hour', VARIADIC CASE WHEN a THEN ARRAY[a, b] ELSE ARRAY[a] END) FROM n;
-- but they may differ between groups
SELECT a, funnel_agg(ts, CASE WHEN a THEN interval '1 hour' ELSE '2 hours' END, true)
FROM n WHERE a IS NOT NULL GROUP BY a ORDER BY a;

-- 64 steps (and 200 through VARIADIC ARRAY): row i matches step i
CREATE TEMP TABLE s64 AS
  SELECT i, timestamptz '2026-01-01' + i * interval '1 second' AS ts FROM generate_series(1, 200) i;
SELECT funnel_agg(ts, '1 hour', i=1, i=2, i=3, i=4, i=5, i=6, i=7, i=8, i=9, i=10, i=11, i=12, i=13, i=14, i=15, i=16,
  i=17, i=18, i=19, i=20, i=21, i=22, i=23, i=24, i=25, i=26, i=27, i=28, i=29, i=30, i=31, i=32, i=33, i=34, i=35,
  i=36, i=37, i=38, i=39, i=40, i=41, i=42, i=43, i=44, i=45, i=46, i=47, i=48, i=49, i=50, i=51, i=52, i=53, i=54,
  i=55, i=56, i=57, i=58, i=59, i=60, i=61, i=62, i=63, i=64) AS steps64
FROM s64 WHERE i <> 0;
SELECT funnel_agg(ts, '1 hour', VARIADIC ARRAY(SELECT i = k FROM generate_series(1, 200) k)) AS steps200,
       funnel_agg(ts, '1 hour', VARIADIC ARRAY(SELECT i = k FROM generate_series(1, 200) k)) FILTER (WHERE i <> 150) AS gap_at_150,
       funnel_agg(ts, '1 hour', 'strict_once, strict_increase', VARIADIC ARRAY(SELECT i = k OR i = k + 1 FROM generate_series(1, 200) k)) AS overlapping,
       (funnel_steps(ts, '1 hour', VARIADIC ARRAY(SELECT i = k FROM generate_series(1, 200) k))).step_ts[200] AS last_step
FROM s64;
-- an exclusion over the whole 200-step chain, hit once at row 100
SELECT funnel_agg(ts, '1 hour', 'exclude(1, 200)', VARIADIC ARRAY(SELECT i = k FROM generate_series(1, 200) k) || (i = 100)) AS excluded
FROM s64;
SELECT funnel_agg(ts, '1 hour', VARIADIC array_fill(true, ARRAY[1025])) FROM s64;

-- retention
SELECT g, retention(e = 'v', e = 'c', e = 'p') FROM fv GROUP BY g ORDER BY g;
SELECT retention(e = 'c', e = 'v') FROM fv WHERE g = 1;
SELECT retention(e = 'c') FROM fv WHERE false;
SELECT retention(VARIADIC '{}'::bool[]) FROM fv;

-- Parallel aggregation: the plan has a Partial Aggregate, and the result is
-- the same as a serial run (per group, and one big group)
CREATE TABLE big AS
  SELECT i / 20 AS g,
         timestamptz '2026-01-01' + ((hashint4(i) & 1023) % 20) * interval '20 seconds' AS ts,
         (ARRAY['v', 'v', 'v', 'c', 'p', 'r', 'x'])[1 + (hashint4(-i) & 1023) % 7] AS e
  FROM generate_series(1, 200000) i;
ANALYZE big;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
EXPLAIN (COSTS OFF)
SELECT funnel_agg(ts, '1 hour', e = 'v', e = 'c', e = 'p') FROM big;
-- the workers really ran, and passed their states through serialize/deserialize
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
SELECT funnel_agg(ts, '1 hour', e = 'v', e = 'c', e = 'p') FROM big;
EXPLAIN (COSTS OFF)
SELECT g, funnel_agg(ts, '1 hour', e = 'v', e = 'c', e = 'p') FROM big GROUP BY g;
-- stored in time order: each worker's rows arrive sorted, and combine merges them
CREATE TABLE bigs AS
  SELECT timestamptz '2026-01-01' + i * interval '1 second' AS ts,
         (ARRAY['v', 'c', 'x', 'v', 'c', 'p', 'r'])[1 + (hashint4(i) & 1023) % 7] AS e
  FROM generate_series(1, 200000) i ORDER BY i;
ANALYZE bigs;
-- the same queries, run with workers, then serially
CREATE TEMP VIEW parq AS
  SELECT 'merged' AS q, (SELECT funnel_steps(ts, '40 seconds', 'strict_once', e = 'v', e = 'c', e = 'v', e = 'c', e = 'p', e = 'v', e = 'c', e = 'p') FROM bigs)::text AS r
  UNION ALL
  SELECT 'one group' AS q, (SELECT funnel_agg(ts, '20 minutes', 'strict_order', e = 'v', e = 'c', e = 'p', e = 'x', e = 'v', e = 'c') FROM big)::text AS r
  UNION ALL
  SELECT 'steps', (SELECT funnel_steps(ts, '20 minutes', 'exclude(2,3)', e = 'v', e = 'c', e = 'p', e = 'r') FROM big)::text
  UNION ALL
  SELECT 'per group', (SELECT string_agg(level || ':' || n, ' ' ORDER BY level) FROM (
    SELECT level, count(*) n FROM (SELECT g, funnel_agg(ts, '3 minutes', 'exclude(2,3)', e = 'v', e = 'c', e = 'p', e = 'r') AS level
                                   FROM big GROUP BY g) x GROUP BY level) y);
CREATE TEMP TABLE par AS SELECT * FROM parq;
RESET parallel_leader_participation;
SET max_parallel_workers_per_gather = 0;
SELECT p.q, p.r = s.r AS same_as_serial, p.r
FROM par p JOIN parq s USING (q) ORDER BY q;
RESET max_parallel_workers_per_gather;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
DROP VIEW parq;
DROP TABLE big, bigs;

-- Randomized comparison with a reference implementation of the documented
-- semantics, attempt by attempt (no merging of attempts), in PL/pgSQL.
-- ts: the rows' timestamps, m: per row a string of '1'/'0' (conditions),
-- both already in the documented order.
CREATE FUNCTION funnel_ref(ts timestamptz[], m text[], nsteps int, xfrom int[], xto int[],
                           win interval, opts text, OUT level int, OUT step_ts timestamptz[])
LANGUAGE plpgsql AS $$
DECLARE
  n int := coalesce(array_length(ts, 1), 0);
  s_order bool := opts LIKE '%strict_order%';
  s_dedup bool := opts LIKE '%strict_deduplication%';
  s_incr bool := opts LIKE '%strict_increase%';
  s_once bool := opts LIKE '%strict_once%';
  cascade bool := NOT s_once AND NOT s_incr;
  nx int := coalesce(array_length(xfrom, 1), 0);
  lvl int; path timestamptz[]; last timestamptz;
  amax int; apos int; apath timestamptz[];
  bestpos int; beststart int; tgt int;
BEGIN
  level := 0; step_ts := '{}';
  FOR i IN 1 .. n LOOP
    CONTINUE WHEN substr(m[i], 1, 1) <> '1';
    -- a new attempt; a row may do several steps at once
    lvl := 1; path := ARRAY[ts[i]]; last := ts[i];
    WHILE cascade AND lvl < nsteps AND substr(m[i], lvl + 1, 1) = '1' LOOP
      lvl := lvl + 1; path := path || ts[i];
    END LOOP;
    amax := lvl; apos := i; apath := path;
    FOR j IN i + 1 .. n LOOP
      EXIT WHEN lvl = nsteps OR ts[j] - ts[i] > win;
      IF substr(m[j], lvl + 1, 1) = '1' AND (NOT s_incr OR ts[j] > last) THEN
        lvl := lvl + 1; path := path || ts[j]; last := ts[j];
        WHILE cascade AND lvl < nsteps AND substr(m[j], lvl + 1, 1) = '1' LOOP
          lvl := lvl + 1; path := path || ts[j];
        END LOOP;
        IF lvl > amax THEN amax := lvl; apos := j; apath := path; END IF;
        CONTINUE;
      END IF;
      EXIT WHEN s_order;
      EXIT WHEN s_dedup AND strpos(substr(m[j], 2, lvl - 1), '1') > 0;
      tgt := lvl;
      FOR x IN 1 .. nx LOOP
        IF substr(m[j], nsteps + x, 1) = '1' AND xfrom[x] <= lvl AND lvl < xto[x] THEN
          tgt := least(tgt, xfrom[x] - 1);
        END IF;
      END LOOP;
      IF tgt < lvl THEN
        EXIT WHEN tgt = 0;
        lvl := tgt; path := path[1:tgt]; last := ts[j];
      END IF;
    END LOOP;
    -- the best: furthest; then reached first; then started last
    IF amax > level OR (amax = level AND (apos < bestpos OR (apos = bestpos AND i > beststart))) THEN
      level := amax; bestpos := apos; beststart := i; step_ts := apath;
    END IF;
  END LOOP;
END $$;

CREATE TEMP TABLE rp (g int PRIMARY KEY, nsteps int, xfrom int[], xto int[], win interval, opts text);
CREATE TEMP TABLE rr (g int, ord int, ts timestamptz, c bool[]);
DO $$
DECLARE
  nsteps int; nx int; a int; xf int[]; xt int[]; opts text[];
BEGIN
  PERFORM setseed(0.4242);
  FOR g IN 1 .. 3000 LOOP
    nsteps := 1 + floor(random() * 5)::int;
    nx := CASE WHEN nsteps >= 2 THEN floor(random() * 3)::int ELSE 0 END;
    xf := '{}'; xt := '{}'; opts := '{}';
    IF random() < 0.3 THEN opts := opts || 'strict_order'::text; END IF;
    IF random() < 0.3 THEN opts := opts || 'strict_deduplication'::text; END IF;
    IF random() < 0.3 THEN opts := opts || 'strict_increase'::text; END IF;
    IF random() < 0.3 THEN opts := opts || 'strict_once'::text; END IF;
    FOR x IN 1 .. nx LOOP
      a := 1 + floor(random() * (nsteps - 1))::int;
      xf := xf || a;
      xt := xt || (a + 1 + floor(random() * (nsteps - a))::int);
      opts := opts || format('exclude(%s,%s)', xf[x], xt[x]);
    END LOOP;
    INSERT INTO rp VALUES (g, nsteps, xf, xt,
      make_interval(mins => (ARRAY[0, 1, 2, 3, 5, 10])[1 + floor(random() * 6)::int]),
      array_to_string(opts, ','));
    FOR r IN 1 .. floor(random() * 13)::int LOOP
      INSERT INTO rr VALUES (g, r,
        CASE WHEN random() < 0.04 THEN NULL
             ELSE timestamptz '2026-01-01' + floor(random() * 9) * interval '1 minute' END,
        ARRAY(SELECT CASE WHEN x < 0.08 THEN NULL ELSE x < 0.42 END
              FROM (SELECT random() AS x FROM generate_series(1, nsteps + nx)) s));
    END LOOP;
  END LOOP;
END $$;

CREATE TEMP TABLE rcmp AS
WITH ref AS (
  SELECT g, (funnel_ref(array_agg(ts ORDER BY ts, m COLLATE "C" DESC), array_agg(m ORDER BY ts, m COLLATE "C" DESC),
                        nsteps, xfrom, xto, win, opts)).*
  FROM (SELECT rr.g, rr.ts, rp.nsteps, rp.xfrom, rp.xto, rp.win, rp.opts,
               array_to_string(ARRAY(SELECT CASE WHEN x THEN '1' ELSE '0' END FROM unnest(rr.c) x), '') AS m
        FROM rr JOIN rp USING (g) WHERE rr.ts IS NOT NULL) s
  GROUP BY g, nsteps, xfrom, xto, win, opts
), agg AS (
  SELECT rp.g,
         funnel_agg(rr.ts, rp.win, rp.opts, VARIADIC rr.c) AS level,
         funnel_agg(rr.ts, rp.win, rp.opts, VARIADIC rr.c ORDER BY rr.ord DESC) AS level_reversed,
         funnel_steps(rr.ts, rp.win, rp.opts, VARIADIC rr.c ORDER BY random()) AS steps
  FROM rr JOIN rp USING (g) GROUP BY rp.g
)
SELECT agg.g, agg.level, agg.level_reversed, (agg.steps).level AS steps_level, (agg.steps).step_ts,
       coalesce(ref.level, 0) AS ref_level, coalesce(ref.step_ts, '{}') AS ref_step_ts
FROM agg LEFT JOIN ref USING (g);

SELECT count(*) AS groups,
       count(*) FILTER (WHERE level = ref_level AND level_reversed = ref_level AND steps_level = ref_level
                        AND step_ts = ref_step_ts) AS agree
FROM rcmp;
-- the cases cover every outcome
SELECT ref_level, count(*) FROM rcmp GROUP BY 1 ORDER BY 1;
-- any disagreement, in full
SELECT c.*, p.opts, p.win FROM rcmp c JOIN rp p USING (g)
WHERE NOT (level = ref_level AND level_reversed = ref_level AND steps_level = ref_level AND step_ts = ref_step_ts)
ORDER BY g LIMIT 5;

-- the fixed-arity overloads (up to 8 conditions written out, no array per
-- row) agree with the VARIADIC form on the same groups, with options and without
CREATE TEMP TABLE fixed_cmp (g int, nconds int, variadic_opts int, fixed_opts int, variadic_plain int, fixed_plain int);
DO $$
BEGIN
  FOR k IN 1 .. 8 LOOP
    EXECUTE format($q$
      INSERT INTO fixed_cmp
      SELECT rp.g, %2$s, funnel_agg(rr.ts, rp.win, rp.opts, VARIADIC rr.c), funnel_agg(rr.ts, rp.win, rp.opts, %1$s),
             funnel_agg(rr.ts, rp.win, VARIADIC rr.c), funnel_agg(rr.ts, rp.win, %1$s)
      FROM rr JOIN rp USING (g) WHERE cardinality(rr.c) = %2$s GROUP BY rp.g$q$,
      (SELECT string_agg(format('rr.c[%s]', i), ', ') FROM generate_series(1, k) i), k);
  END LOOP;
END $$;
SELECT count(*) AS groups, count(DISTINCT nconds) AS arities,
       count(*) FILTER (WHERE fixed_opts = variadic_opts AND fixed_plain = variadic_plain) AS agree
FROM fixed_cmp;

-- funnel_breakdown: the funnel per key ------------------------------------------
-- a session viewing a book and a lamp, carting the book, checking out
-- (no category) and buying the book: books 4, lamps 1
SELECT funnel_breakdown(ts, '1 hour', cat, typ = 'view', typ = 'cart', typ = 'checkout', typ = 'buy')
FROM (VALUES (1, 'view', 'books'), (2, 'view', 'lamps'), (3, 'cart', 'books'),
             (4, 'checkout', NULL), (5, 'buy', 'books')) v(m, typ, cat),
     LATERAL (SELECT timestamptz '2026-01-01' + m * interval '1 minute' AS ts) t;
-- a row without a key never starts a funnel; a key seen only on rows that
-- match no step is there with 0; NULL ts rows are ignored; the window holds
SELECT funnel_breakdown(ts, '10 minutes', k, s = 1, s = 2)
FROM (VALUES ('2026-01-01 00:00'::timestamptz, NULL, 1), ('2026-01-01 00:01', 'a', 2),
             ('2026-01-01 00:02', 'b', 9), (NULL, 'c', 1), ('2026-01-01 00:03', 'd', 1),
             ('2026-01-01 00:14', NULL, 2), ('2026-01-01 00:04', 'e', 1),
             ('2026-01-01 00:14', 'e', 2)) v(ts, k, s);
-- with a label: the smallest non-NULL label of the key, or null
SELECT funnel_breakdown(ts, '1 hour', k, l, s = 1, s = 2)
FROM (VALUES ('2026-01-01 00:00'::timestamptz, 'p1', 'zeta', 1), ('2026-01-01 00:01', 'p1', 'alpha', 2),
             ('2026-01-01 00:02', 'p2', NULL, 1), ('2026-01-01 00:03', 'p1', NULL, 2)) v(ts, k, l, s);
-- no rows: NULL; errors as funnel_agg's
SELECT funnel_breakdown(now(), '1 hour', 'k', true) FROM generate_series(1, 0);
SELECT funnel_breakdown(now(), NULL, 'k', true);
SELECT funnel_breakdown(now(), '-1 hour', 'k', true);
SELECT funnel_breakdown(now(), '1 hour', 'k', VARIADIC '{}'::boolean[]);

-- Random groups against the same funnel per key in plain SQL (funnel_agg
-- over each key's rows and the keyless rows, step 1 only on keyed rows);
-- up to 60 keys per group, so the hashed key lookup runs too
SELECT setseed(0.31);
CREATE TEMP TABLE br AS
SELECT g, timestamptz '2026-01-01' + floor(random() * 120) * interval '1 minute' AS ts,
       CASE WHEN random() < 0.2 THEN NULL ELSE 'k' || floor(random() * (1 + g % 60)) END AS k,
       CASE WHEN random() < 0.3 THEN NULL ELSE 'l' || floor(random() * 5) END AS l,
       1 + floor(random() * 4)::int AS s
FROM generate_series(1, 400) g, generate_series(1, 1 + floor(random() * 80)::int) n;
CREATE TEMP TABLE brcmp AS
WITH agg AS (
  SELECT g, funnel_breakdown(ts, '30 minutes', k, l, s = 1, s = 2, s = 3) AS b,
         funnel_breakdown(ts, '30 minutes', k, s = 1, s = 2, s = 3 ORDER BY random()) AS b_shuffled
  FROM br GROUP BY g
), keys AS (SELECT DISTINCT g, k FROM br WHERE k IS NOT NULL AND ts IS NOT NULL
), ref AS (
  SELECT x.g, jsonb_object_agg(x.k, jsonb_build_array(x.level, x.label)) AS b
  FROM (SELECT keys.g, keys.k,
               funnel_agg(r.ts, '30 minutes', r.s = 1 AND r.k IS NOT NULL, r.s = 2, r.s = 3) AS level,
               min(r.l COLLATE "C") FILTER (WHERE r.k IS NOT NULL) AS label
        FROM keys JOIN br r ON r.g = keys.g AND (r.k = keys.k OR r.k IS NULL)
        GROUP BY keys.g, keys.k) x
  GROUP BY x.g
)
SELECT agg.g, agg.b, agg.b_shuffled, coalesce(ref.b, '{}') AS ref
FROM agg LEFT JOIN ref USING (g);
SELECT count(*) AS groups,
       count(*) FILTER (WHERE b = ref) AS agree,
       count(*) FILTER (WHERE b_shuffled = (SELECT jsonb_object_agg(key, value -> 0) FROM jsonb_each(ref))
                           OR (ref = '{}' AND b_shuffled = '{}')) AS agree_shuffled,
       max((SELECT count(*) FROM jsonb_object_keys(b))) AS most_keys,
       sum((SELECT count(*) FROM jsonb_each(b) WHERE (value ->> 0)::int = 3)) AS keys_at_step_3
FROM brcmp;
SELECT * FROM brcmp WHERE b <> ref LIMIT 3;
-- funnel_breakdown_continue: a group's later rows, continuing from the result
-- of its earlier ones, give the result of all of them (each step its own
-- condition, a window over the whole group, as a session's).  The session
-- above cut after its cart: books 2, lamps 1 so far; then checkout and buy.
SELECT funnel_breakdown_continue('{"books": 2, "lamps": 1}', timestamptz '2026-01-01 00:03', ts,
                                 '1 hour', cat, typ = 'view', typ = 'cart', typ = 'checkout', typ = 'buy')
FROM (VALUES (4, 'checkout', NULL), (5, 'buy', 'books')) v(m, typ, cat),
     LATERAL (SELECT timestamptz '2026-01-01' + m * interval '1 minute' AS ts) t;
-- a key at level 0 stays; a label: the smallest of prior's and the rows'
SELECT funnel_breakdown_continue('{"p1": [1, "zeta"], "p2": [0, null]}', now(), ts, '1 day', k, l, s = 1, s = 2)
FROM (VALUES (now() + interval '1 minute', 'p1', 'alpha', 2)) v(ts, k, l, s);
-- errors: prior not an object, a level beyond the steps, no level, no end
SELECT funnel_breakdown_continue('[1]', now(), now(), '1 day', 'k', true);
SELECT funnel_breakdown_continue('{"k": 3}', now(), now(), '1 day', 'k', true, true);
SELECT funnel_breakdown_continue('{"k": "x"}', now(), now(), '1 day', 'k', true);
SELECT funnel_breakdown_continue('{"k": 1}', NULL, now(), '1 day', 'k', true);
-- the random groups above, each cut at its own time
CREATE TEMP TABLE brcut AS
SELECT g, timestamptz '2026-01-01' + (5 + (g % 7) * 20) * interval '1 minute' AS cut FROM generate_series(1, 400) g;
WITH whole AS (
  SELECT g, funnel_breakdown(ts, '1 day', k, l, s = 1, s = 2, s = 3) AS b,
         funnel_breakdown(ts, '1 day', k, s = 1, s = 2, s = 3) AS u
  FROM br GROUP BY g
), prior AS (
  SELECT g, funnel_breakdown(ts, '1 day', k, l, s = 1, s = 2, s = 3) AS b,
         funnel_breakdown(ts, '1 day', k, s = 1, s = 2, s = 3) AS u
  FROM br JOIN brcut USING (g) WHERE ts <= cut GROUP BY g
), cont AS (
  SELECT g, funnel_breakdown_continue(p.b, c.cut, r.ts, '1 day', r.k, r.l, r.s = 1, r.s = 2, r.s = 3) AS b,
         funnel_breakdown_continue(p.u, c.cut, r.ts, '1 day', r.k, r.s = 1, r.s = 2, r.s = 3) AS u
  FROM br r JOIN brcut c USING (g) LEFT JOIN prior p USING (g)
  WHERE r.ts > c.cut GROUP BY g
)
SELECT count(*) AS groups, count(*) FILTER (WHERE p.g IS NOT NULL) AS with_prior,
       count(*) FILTER (WHERE c.b = w.b) AS agree_labelled, count(*) FILTER (WHERE c.u = w.u) AS agree,
       sum((SELECT count(*) FROM jsonb_each(w.u) WHERE value::int = 3)) AS keys_at_step_3
FROM cont c JOIN whole w USING (g) LEFT JOIN prior p USING (g);
DROP EXTENSION clickstream;
