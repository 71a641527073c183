# clickstream: PGXS build of the extension, the test and demo tools (the
# local broker and the event generator: `make tools`), and the entry points
# of tests and benchmarks.

EXTENSION = clickstream
EXTVERSION = 0.2.0

MODULE_big = clickstream
OBJS = \
	src/clickstream.o \
	src/guc.o \
	src/status.o \
	src/worker.o \
	src/kafka.o \
	src/bronze.o \
	src/lockwait.o \
	src/copy.o \
	src/isolate.o \
	src/json.o \
	src/aliases.o \
	src/silver.o \
	src/sha256.o \
	src/refresh.o \
	src/writer.o \
	src/sessionize.o \
	src/funnel_agg.o \
	src/funnel_breakdown.o \
	src/retention.o \
	src/marts.o \
	src/drop.o

# The install script of the current version is assembled from one file per
# layer, in name order.  The scripts of earlier releases (sql/releases, kept
# byte for byte as released) and the update scripts between released
# versions (sql/updates/*.sql) are installed as they are: CREATE EXTENSION
# ... VERSION and ALTER EXTENSION ... UPDATE find them there.  The update
# script to the version in development is assembled from its template
# (sql/updates/*.in) and the layers by tools/update_script.pl.
PREVIOUS = 0.1.0
UPDATE_SCRIPT = $(EXTENSION)--$(PREVIOUS)--$(EXTVERSION).sql
DATA_built = $(EXTENSION)--$(EXTVERSION).sql $(UPDATE_SCRIPT)
DATA = $(wildcard sql/releases/$(EXTENSION)--*.sql) $(wildcard sql/updates/$(EXTENSION)--*--*.sql)
INSTALL_LAYERS = $(sort $(wildcard sql/install/*.sql))

REGRESS = bronze backup silver catchup producers sessions sessions_split funnel marts marts_producers marts_ops reader security
# Regression tests live in test/sql and test/expected; results go to test/.
REGRESS_OPTS = --inputdir=test --outputdir=test --temp-config=test/regress.conf \
	--temp-instance=./tmp_check --encoding=UTF8 --no-locale

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

# Warnings are errors only when asked (CS_WERROR=1: CI and test/run.sh), not
# in a user's build against a compiler or server headers we never saw.
ifeq ($(CS_WERROR),1)
WERROR = -Werror
endif

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra $(WERROR) -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK = $(shell pkg-config --libs rdkafka 2>/dev/null || echo -lrdkafka)

EXTRA_CLEAN = $(DATA_built) tools/broker tools/eventgen

PG_CONFIG ?= $(shell test -x /usr/lib/postgresql/15/bin/pg_config && echo /usr/lib/postgresql/15/bin/pg_config || echo pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

$(EXTENSION)--$(EXTVERSION).sql: $(INSTALL_LAYERS)
	cat $^ > $@

$(UPDATE_SCRIPT): sql/updates/$(EXTENSION)--$(PREVIOUS)--$(EXTVERSION).in sql/releases/$(EXTENSION)--$(PREVIOUS).sql $(INSTALL_LAYERS) tools/update_script.pl
	perl tools/update_script.pl sql/releases/$(EXTENSION)--$(PREVIOUS).sql $< $(INSTALL_LAYERS) > $@.tmp && mv $@.tmp $@

# Test and demo tools: librdkafka's mock cluster as a broker, the generator.
# Not part of `make`: tools/setup.sh builds them for the demo and the tests.
TOOLS_CFLAGS = -O2 -g -Wall -Wextra $(WERROR) -std=gnu11
.PHONY: tools
tools: tools/broker tools/eventgen

tools/broker: tools/broker.c
	$(CC) $(TOOLS_CFLAGS) -o $@ $< $(SHLIB_LINK)

tools/eventgen: tools/eventgen.c
	$(CC) $(TOOLS_CFLAGS) -o $@ $< $(SHLIB_LINK) -lm

.PHONY: bench bench-silver bench-catchup bench-sessions bench-funnel bench-marts bench-e2e
bench: all
	bash test/bench/ingest.sh

bench-silver: all
	bash test/bench/silver.sh

bench-catchup: all
	bash test/bench/catchup.sh

bench-sessions: all
	bash test/bench/sessions.sh

bench-funnel: all
	bash test/bench/funnel.sh

bench-marts: all
	bash test/bench/marts.sh

bench-e2e: all
	bash test/bench/e2e.sh

# The TAP tests alone (installcheck runs pg_regress and then these).
.PHONY: tapcheck
tapcheck:
	$(prove_installcheck)
