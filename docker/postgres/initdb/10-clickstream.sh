#!/bin/bash
# Run once by the postgres image's entrypoint, when it creates the cluster:
# ../init.sql (mounted at /etc/postgresql/clickstream-init.sql) in database
# clickstream, with the dashboards' passwords from the environment (.env).
set -euo pipefail

psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v grafana_password="$GRAFANA_DB_PASSWORD" \
	-v metabase_password="$METABASE_DB_PASSWORD" \
	-v metabase_app_password="$METABASE_APP_DB_PASSWORD" \
	-f /etc/postgresql/clickstream-init.sql
