-- Backup: what pg_dump saves of the extension's tables.
--
-- pg_dump leaves out the contents of an extension's tables unless the
-- install script registers them (pg_extension_config_dump); a restore then
-- runs CREATE EXTENSION and loads what was saved.  Every table that holds
-- pipeline state is registered here, with the sequences that number its
-- rows; the configuration tables with shipped rows are registered next to
-- those rows, with a filter that leaves them out (event_types,
-- quality_checks, funnel_definition).  The day partitions of
-- clickstream.events are not members of the extension (create_partitions
-- makes them at run time): pg_dump saves them, their indexes and their rows
-- like any table of the user's.
--
-- Not registered: bronze and ingest_positions.  They are UNLOGGED, crash
-- recovery empties them, and the worker then resumes from the durable
-- watermarks; a restored server does the same, so a dump holds no rows of
-- them and needs none (docs/operations.md, "Backup and restore").
-- test/sql/backup.sql checks that every other table is registered.

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

-- positions and dead letters (10_bronze.sql)
SELECT pg_catalog.pg_extension_config_dump('clickstream.watermarks', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.dead_letters_id_seq', '');

-- silver and its bookkeeping (20_silver.sql)
SELECT pg_catalog.pg_extension_config_dump('clickstream.event_ids', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.refresh_history', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.refresh_history_run_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.touched', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.touched_touch_id_seq', '');

-- quality results (30_quality.sql)
SELECT pg_catalog.pg_extension_config_dump('clickstream.quality_results', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.quality_results_id_seq', '');

-- gold: sessions and where gold stands (50_sessions.sql)
SELECT pg_catalog.pg_extension_config_dump('clickstream.sessions', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.gold_state', '');

-- the funnel tables (60_funnel_gold.sql)
SELECT pg_catalog.pg_extension_config_dump('clickstream.daily_funnel', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.funnel_by_category', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.product_funnel', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.high_interest_low_conversion', '');

-- the marts and their sets (70_marts.sql)
SELECT pg_catalog.pg_extension_config_dump('clickstream.daily_metrics', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.hourly_metrics', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.category_daily', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.product_daily', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.products', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.orders', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.users', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.active_users', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.cohort_retention', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.traffic_daily', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.audience_daily', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.pages_daily', '');
SELECT pg_catalog.pg_extension_config_dump('clickstream.user_days', '');
