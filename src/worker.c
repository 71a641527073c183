/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The ingestion background worker: registration and main loop.
 *
 * clickstream.consumers workers are registered at startup, each a member of
 * the Kafka consumer group.  A worker:
 *	  - waits quietly (one LOG line) until the extension exists in
 *	    clickstream.database, and goes back to waiting after DROP EXTENSION;
 *	  - waits while clickstream.enabled is off, out of the group, keeping
 *	    its position (it lives in the database);
 *	  - otherwise polls Kafka and writes a batch when it reaches
 *	    clickstream.batch_size messages, clickstream.batch_max_size bytes, or
 *	    is clickstream.batch_timeout old;
 *	  - commits the batch's offsets to the Kafka group only after the
 *	    PostgreSQL commit;
 *	  - on SIGHUP re-reads the settings (and clickstream.kafka_options_file),
 *	    reconnecting if the Kafka ones changed; on SIGTERM writes the pending batch, leaves the group and
 *	    exits.
 *
 * An ERROR ends the process (no error recovery in the loop); the postmaster
 * starts it again after bgw_restart_time, and it resumes from the database.
 * Unreachable brokers are not an error: librdkafka retries forever.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define WORKER_RESTART_SECS 5
#define WORKER_POLL_MS 100
#define WORKER_TICK_MS 1000
#define WORKER_RETRY_MS 10000
#define WORKER_MESSAGES_PER_PASS 5000

static int	my_consumer = 0;
static BronzeBatch *batch = NULL;
static TimestampTz batch_deadline = 0;
static bool extension_gone = false;
static bool connecting = false;

/* The Kafka settings and topic the open consumer was created with. */
static char *open_settings = NULL;
static char open_topic[CLICKSTREAM_TOPIC_LEN];

/* Register clickstream.consumers background workers. */
void
WorkerRegister(void)
{
	for (int i = 0; i < cs_consumers; i++)
	{
		BackgroundWorker worker;

		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = WORKER_RESTART_SECS;
		strlcpy(worker.bgw_library_name, "clickstream", BGW_MAXLEN);
		strlcpy(worker.bgw_function_name, "ClickstreamWorkerMain", BGW_MAXLEN);
		snprintf(worker.bgw_name, BGW_MAXLEN, "clickstream consumer %d", i);
		strlcpy(worker.bgw_type, "clickstream consumer", BGW_MAXLEN);
		worker.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&worker);
	}
}

/* The Kafka-related settings as one string, to notice a change on reload. */
static char *
WorkerKafkaSettings(void)
{
	return psprintf("%s|%s|%s|%s|%s|%d|%d", cs_brokers, cs_topic, cs_group_id,
					cs_kafka_options, cs_kafka_options_file, cs_start_offset,
					cs_fetch_buffer_kb);
}

/* Write the pending batch, then commit its offsets to the Kafka group. */
static void
WorkerFlush(void)
{
	BronzePartitionResult *res = NULL;
	KafkaPosition *commit;
	int			ncommit = 0;
	int			n;
	TimestampTz now;

	if (BronzeBatchIsEmpty(batch))
		return;

	n = BronzeBatchWrite(batch, open_topic, &res);
	if (n < 0)
	{
		/* DROP EXTENSION: nothing was written, nothing is stored */
		extension_gone = true;
		BronzeBatchReset(batch);
		return;
	}

	now = GetCurrentTimestamp();
	commit = palloc(sizeof(KafkaPosition) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		if (res[i].stale)
		{
			KafkaPosition pos = {res[i].partition, -1};

			ereport(WARNING,
					(errmsg("clickstream consumer %d: %s[%d] was moved by another consumer; %lld messages not written",
							my_consumer, open_topic, res[i].partition,
							(long long) res[i].messages),
					 errdetail("The stored position is %lld; this consumer resumes from there.",
							   (long long) res[i].stored_offset)));
			BronzeLoadPositions(open_topic, &pos, 1);
			if (pos.offset >= 0)
				KafkaSeek(pos.partition, pos.offset);
			continue;
		}
		commit[ncommit].partition = res[i].partition;
		commit[ncommit].offset = res[i].next_offset;
		ncommit++;
		StatusPartitionProgress(my_consumer, open_topic, res[i].partition,
								res[i].next_offset, res[i].messages,
								res[i].bytes, now);
		StatusPartitionWatermark(open_topic, res[i].partition,
								 KafkaHighWatermark(res[i].partition));
	}
	KafkaCommit(commit, ncommit);
	pfree(commit);
	BronzeBatchReset(batch);
}

/* Rebalance hook: look up the stored positions of newly assigned partitions. */
static void
WorkerOnAssign(KafkaPosition *positions, int n)
{
	BronzeLoadPositions(open_topic, positions, n);
}

/* Rebalance hook: partitions are going away, write what we hold of them. */
static void
WorkerOnRevoke(void)
{
	WorkerFlush();
}

/* Leave the group (writing the pending batch first) and forget the consumer. */
static void
WorkerCloseConsumer(void)
{
	if (!extension_gone)
		WorkerFlush();
	BronzeBatchReset(batch);
	KafkaClose();
	if (open_settings)
		pfree(open_settings);
	open_settings = NULL;
}

/* Sleep until the latch is set or timeout_ms passes. */
static void
WorkerSleep(long timeout_ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout_ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/* Once a second: publish statistics, notice DROP EXTENSION while idle. */
static void
WorkerTick(void)
{
	const int32 *parts;
	int			n = KafkaAssignment(&parts);

	KafkaCheckBrokers();
	StatusWorkerTick(my_consumer, n);
	for (int i = 0; i < n; i++)
		StatusPartitionWatermark(open_topic, parts[i], KafkaHighWatermark(parts[i]));
	if (BronzeBatchIsEmpty(batch) && !BronzeExtensionExists())
		extension_gone = true;
}

/* Has the batch reached clickstream.batch_size or batch_max_size? */
static bool
WorkerBatchFull(void)
{
	return BronzeBatchRows(batch) >= cs_batch_size ||
		BronzeBatchBytes(batch) >= (Size) cs_batch_max_kb * 1024;
}

/* Poll up to a pass worth of messages, writing batches as they fill up. */
static void
WorkerConsume(void)
{
	for (int i = 0; i < WORKER_MESSAGES_PER_PASS; i++)
	{
		KafkaMessage msg;
		TimestampTz now = GetCurrentTimestamp();
		long		timeout = WORKER_POLL_MS;
		bool		got;

		if (!BronzeBatchIsEmpty(batch))
		{
			if (now >= batch_deadline || WorkerBatchFull())
			{
				WorkerFlush();
				continue;
			}
			timeout = Min(timeout, (batch_deadline - now) / 1000 + 1);
		}

		got = KafkaPoll((int) timeout, &msg);
		if (extension_gone)
			return;
		if (got)
		{
			if (BronzeBatchIsEmpty(batch))
				batch_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															 cs_batch_timeout);
			BronzeBatchAdd(batch, open_topic, &msg);
			if (WorkerBatchFull())
				WorkerFlush();
		}
		else if (BronzeBatchIsEmpty(batch))
			return;				/* idle: let the main loop look around */

		if (ShutdownRequestPending || ConfigReloadPending)
			return;
		CHECK_FOR_INTERRUPTS();
	}
}

/* Exit during connection: the database does not exist (FATAL). */
static void
WorkerOnConnectExit(int code, Datum arg)
{
	if (connecting && code != 0)
		StatusSetDatabaseMissing(my_consumer, true);
}

/*
 * Wait, connected to no database, until clickstream.database exists; then
 * exit so that the postmaster starts the worker again, connected to it.
 * Keeps a missing database from becoming a FATAL every few seconds.
 */
static void
WorkerWaitForDatabase(void)
{
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	StatusWorkerSetState(my_consumer, WORKER_WAITING_FOR_EXTENSION);
	ereport(LOG,
			(errmsg("clickstream consumer %d is waiting for database \"%s\" to be created",
					my_consumer, cs_database),
			 errhint("Create the database, or set clickstream.database and restart the server.")));
	while (!ShutdownRequestPending)
	{
		bool		exists;

		CHECK_FOR_INTERRUPTS();
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		exists = OidIsValid(get_database_oid(cs_database, true));
		CommitTransactionCommand();
		if (exists)
		{
			StatusSetDatabaseMissing(my_consumer, false);
			proc_exit(1);
		}
		WorkerSleep(WORKER_TICK_MS);
	}
	proc_exit(1);				/* restarted unless the server is shutting down */
}

/* Mark the worker stopped in shared memory on the way out. */
static void
WorkerOnExit(int code, Datum arg)
{
	StatusWorkerSetState(my_consumer, WORKER_STOPPED);
}

/* Entry point of an ingestion worker; main_arg is its consumer number. */
void
ClickstreamWorkerMain(Datum main_arg)
{
	WorkerState state = WORKER_STARTING;
	TimestampTz last_tick = 0;

	my_consumer = DatumGetInt32(main_arg);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	if (StatusDatabaseMissing(my_consumer))
		WorkerWaitForDatabase();
	connecting = true;
	before_shmem_exit(WorkerOnConnectExit, (Datum) 0);
	BackgroundWorkerInitializeConnection(cs_database, NULL, 0);
	connecting = false;
	pgstat_report_appname(psprintf("clickstream consumer %d", my_consumer));

	StatusWorkerStart(my_consumer);
	before_shmem_exit(WorkerOnExit, (Datum) 0);
	batch = BronzeBatchCreate(TopMemoryContext);

	while (!ShutdownRequestPending)
	{
		WorkerState next;

		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			char	   *now_settings;

			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			now_settings = WorkerKafkaSettings();
			/* the options file is read again: its contents may have changed */
			if (KafkaIsOpen() &&
				(strcmp(now_settings, open_settings) != 0 || KafkaOptionsFileChanged()))
			{
				ereport(LOG,
						(errmsg("clickstream consumer %d: Kafka settings changed, reconnecting",
								my_consumer)));
				WorkerCloseConsumer();
			}
			pfree(now_settings);
		}

		if (extension_gone && KafkaIsOpen())
			WorkerCloseConsumer();

		/* decide what to do in this pass */
		if (!cs_enabled)
			next = WORKER_DISABLED;
		else if (!KafkaIsOpen() && !BronzeExtensionExists())
			next = WORKER_WAITING_FOR_EXTENSION;
		else
			next = KafkaBrokersDown() ? WORKER_BROKER_DOWN : WORKER_CONSUMING;

		if (next != state)
		{
			if (next == WORKER_WAITING_FOR_EXTENSION)
				ereport(LOG,
						(errmsg("clickstream consumer %d is waiting for CREATE EXTENSION clickstream in database \"%s\"",
								my_consumer, cs_database)));
			else if (next == WORKER_DISABLED)
				ereport(LOG,
						(errmsg("clickstream consumer %d is paused (clickstream.enabled = off)",
								my_consumer)));
			StatusWorkerSetState(my_consumer, next);
			state = next;
		}

		if (state == WORKER_DISABLED || state == WORKER_WAITING_FOR_EXTENSION)
		{
			if (KafkaIsOpen())
				WorkerCloseConsumer();
			extension_gone = false;
			WorkerSleep(WORKER_TICK_MS);
			continue;
		}

		if (!KafkaIsOpen())
		{
			state = WORKER_CONNECTING;
			StatusWorkerSetState(my_consumer, state);
			strlcpy(open_topic, cs_topic, sizeof(open_topic));
			if (!KafkaOpen(my_consumer, WorkerOnAssign, WorkerOnRevoke))
			{
				StatusWorkerError(my_consumer, -1, "invalid Kafka configuration; waiting for a reload");
				WorkerSleep(WORKER_RETRY_MS);
				continue;
			}
			open_settings = MemoryContextStrdup(TopMemoryContext, WorkerKafkaSettings());
			strlcpy(open_topic, cs_topic, sizeof(open_topic));
			extension_gone = false;
		}

		WorkerConsume();

		if (TimestampDifferenceExceeds(last_tick, GetCurrentTimestamp(), WORKER_TICK_MS))
		{
			WorkerTick();
			last_tick = GetCurrentTimestamp();
		}
	}

	/*
	 * SIGTERM: write what we hold, leave the group, exit.  Exit code 1: a
	 * worker terminated on its own (pg_terminate_backend) is started again;
	 * clickstream.enabled = off is the way to pause ingestion.
	 */
	if (KafkaIsOpen())
		WorkerCloseConsumer();
	ereport(LOG, (errmsg("clickstream consumer %d stopped", my_consumer)));
	proc_exit(1);
}
