-- What the stack's database holds besides the extension: run once, as the
-- superuser in database clickstream, by initdb/10-clickstream.sh when the
-- postgres container creates its cluster (and by test/t/016_dashboards.pl).
-- psql variables: grafana_password, metabase_password, metabase_app_password.
\set ON_ERROR_STOP on

CREATE EXTENSION clickstream;
CREATE EXTENSION pg_cron;

-- the refresh every minute
SELECT clickstream.schedule();

-- the quality checks: once now (the pipeline-health panels show their
-- latest results), then every night on the last two days (they re-read
-- silver and recompute gold: a job for when the shop sleeps)
SELECT count(*) AS quality_checks FROM clickstream.check_quality();
SELECT cron.schedule('clickstream-quality', '17 3 * * *',
	'SELECT count(*) FROM clickstream.check_quality(current_date - 1)');

-- the dashboards log in as members of clickstream_reader: they read the
-- marts and the pipeline's status, nothing raw, and write nothing
CREATE ROLE grafana LOGIN PASSWORD :'grafana_password' IN ROLE clickstream_reader;
CREATE ROLE metabase LOGIN PASSWORD :'metabase_password' IN ROLE clickstream_reader;

-- Metabase keeps its own application data (users, questions, dashboards) in
-- a database of its own
CREATE ROLE metabase_app LOGIN PASSWORD :'metabase_app_password';
CREATE DATABASE metabase OWNER metabase_app;
