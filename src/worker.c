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
 *	  - when a lock the write needs is not granted within lock_timeout,
 *	    keeps the batch and retries every second, state "blocked" (with what
 *	    it waits on), partitions paused, still polling Kafka;
 *	  - asks the broker for the high watermarks every 2 seconds, whether or
 *	    not it writes;
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

/* Broker queries for the high watermarks: how often, and the longest wait. */
#define WORKER_WATERMARK_MS 2000
#define WORKER_WATERMARK_TIMEOUT_MS 500
#define WORKER_BLOCKED_LOG_MS 60000
static TimestampTz last_watermarks = 0;
static TimestampTz last_blocked_log = 0;

/* A revoke hook waiting for a lock was logged (once per flush). */
static bool revoke_wait_logged = false;

/* WorkerWhileBlocked paused the partitions; resumed after the write. */
static bool partitions_paused = false;

/* A batch was given up: the consumer must be closed before reading on. */
static bool consumer_abandoned = false;

/* The configuration was reloaded while blocked: compare the Kafka settings. */
static bool settings_reloaded = false;

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

/* Sleep until the latch is set or timeout_ms passes. */
static void
WorkerSleep(long timeout_ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout_ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/*
 * Ask the broker for the high watermarks of the assigned partitions, at most
 * every WORKER_WATERMARK_MS: the lag in clickstream.status must not depend
 * on batches being written.
 */
static void
WorkerRefreshWatermarks(void)
{
	const int32 *parts;
	int			n = KafkaAssignment(&parts);
	int64	   *highs;
	TimestampTz now = GetCurrentTimestamp();

	if (n == 0 || !TimestampDifferenceExceeds(last_watermarks, now, WORKER_WATERMARK_MS))
		return;
	last_watermarks = now;
	highs = palloc(sizeof(int64) * n);
	if (KafkaQueryHighWatermarks(parts, n, highs, WORKER_WATERMARK_TIMEOUT_MS))
	{
		now = GetCurrentTimestamp();
		for (int i = 0; i < n; i++)
			StatusPartitionWatermark(open_topic, parts[i], highs[i], now);
	}
	pfree(highs);
}

/* Do the Kafka settings differ from those the consumer was opened with? */
static bool
WorkerKafkaSettingsChanged(void)
{
	char	   *now_settings = WorkerKafkaSettings();
	bool		changed = strcmp(now_settings, open_settings) != 0 ||
		KafkaOptionsFileChanged();

	pfree(now_settings);
	return changed;
}

/*
 * The batch could not be written: a lock it needs was not granted within
 * lock_timeout.  Publish state blocked with what it waits for, then for
 * about WORKER_TICK_MS keep serving Kafka with every partition paused (no
 * prefetch beyond the batch, no max.poll.interval.ms expiry), keep the high
 * watermarks fresh and watch SIGTERM and reloads.  Returns false when the
 * batch is to be given up instead of retried (SIGTERM, clickstream.enabled
 * off, Kafka settings changed): the caller drops it and the consumer is
 * closed, so that its messages are read again from the stored positions.
 */
static bool
WorkerWhileBlocked(TimestampTz since)
{
	char		waiting_for[CLICKSTREAM_ERROR_LEN];
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 WORKER_TICK_MS);
	bool		outer = !KafkaInRebalance();

	LockWaitDescribe(waiting_for, sizeof(waiting_for), BronzeBlockedContext());
	StatusWorkerSetBlocked(my_consumer, waiting_for, since);
	if (TimestampDifferenceExceeds(last_blocked_log, GetCurrentTimestamp(),
								   WORKER_BLOCKED_LOG_MS))
	{
		last_blocked_log = GetCurrentTimestamp();
		ereport(LOG,
				(errmsg("clickstream consumer %d cannot write its batch: waiting for %s",
						my_consumer, waiting_for),
				 errdetail("The batch of %d messages is kept and written when the lock is granted; the partitions are paused meanwhile.",
						   BronzeBatchRows(batch))));
	}

	/* a revoke hook (run from inside librdkafka) cannot poll: it only waits */
	if (outer)
	{
		KafkaPauseAll(true);
		partitions_paused = true;
	}
	else if (!revoke_wait_logged)
	{
		revoke_wait_logged = true;
		ereport(LOG,
				(errmsg("clickstream consumer %d: partitions are revoked while it is blocked; it waits for the lock before releasing them",
						my_consumer),
				 errdetail("Kafka is not polled meanwhile; the rebalance completes when the batch is written.")));
	}
	while (GetCurrentTimestamp() < until)
	{
		KafkaMessage msg;

		if (ShutdownRequestPending)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			settings_reloaded = true;
			if (!cs_enabled || WorkerKafkaSettingsChanged())
				break;
		}
		CHECK_FOR_INTERRUPTS();
		if (!outer)
		{
			WorkerSleep(WORKER_POLL_MS);
			continue;
		}
		if (KafkaPoll(WORKER_POLL_MS, &msg))
		{
			/* from a partition not paused yet (see KafkaPauseAll): keep it */
			BronzeBatchAdd(batch, open_topic, &msg);
			KafkaPauseAll(true);
		}
		WorkerRefreshWatermarks();
	}
	if (ShutdownRequestPending || !cs_enabled ||
		(settings_reloaded && WorkerKafkaSettingsChanged()))
	{
		ereport(LOG,
				(errmsg("clickstream consumer %d gives up its unwritten batch of %d messages",
						my_consumer, BronzeBatchRows(batch)),
				 errdetail("It stopped waiting for %s; the messages are read again from the stored positions.",
						   waiting_for)));
		return false;
	}
	return true;
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
	TimestampTz blocked_since = 0;

	if (BronzeBatchIsEmpty(batch))
		return;

	revoke_wait_logged = false;
	for (;;)
	{
		LockWaitStart();
		n = BronzeBatchWrite(batch, open_topic, &res);
		LockWaitStop();
		if (n != BRONZE_WRITE_BLOCKED)
			break;
		if (blocked_since == 0)
			blocked_since = GetCurrentTimestamp();
		if (!WorkerWhileBlocked(blocked_since))
		{
			/* nothing of it is stored: the next reader starts before it */
			BronzeBatchReset(batch);
			consumer_abandoned = true;
			StatusWorkerSetUnblocked(my_consumer);
			return;
		}
	}
	if (blocked_since != 0)
	{
		WorkerState was = StatusWorkerSetUnblocked(my_consumer);

		if (was == WORKER_CONSUMING || was == WORKER_BROKER_DOWN)
			StatusWorkerSetState(my_consumer,
								 KafkaBrokersDown() ? WORKER_BROKER_DOWN : WORKER_CONSUMING);
		if (partitions_paused && !KafkaInRebalance())
		{
			KafkaPauseAll(false);
			partitions_paused = false;
		}
		/* (empty when a revoke hook wrote it meanwhile, and logged it) */
		if (!BronzeBatchIsEmpty(batch))
			ereport(LOG,
					(errmsg("clickstream consumer %d wrote its batch of %d messages after waiting %ld ms for a lock",
							my_consumer, BronzeBatchRows(batch),
							(long) (TimestampDifferenceMilliseconds(blocked_since, GetCurrentTimestamp())))));
	}
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
			const char *resume_at;

			/*
			 * Resume from the stored position (or the durable watermark).
			 * Without either (the rows were deleted), from the earliest offset
			 * with start_offset = earliest, as a partition never read starts;
			 * with latest, from the batch dropped here, which would otherwise
			 * be skipped unrecorded.
			 */
			BronzeLoadPositions(open_topic, &pos, 1);
			if (pos.offset >= 0)
			{
				KafkaSeek(pos.partition, pos.offset);
				resume_at = psprintf("offset %lld, its durable watermark", (long long) pos.offset);
			}
			else if (cs_start_offset == START_OFFSET_LATEST)
			{
				KafkaSeek(pos.partition, res[i].first_offset);
				resume_at = psprintf("offset %lld, the first of the messages not written",
									 (long long) res[i].first_offset);
			}
			else
			{
				KafkaSeekBeginning(pos.partition);
				resume_at = "the earliest offset Kafka has (clickstream.start_offset = earliest)";
			}

			/* (bronze.c warned of offsets below the position, with what to do) */
			if (res[i].behind)
				StatusWorkerError(my_consumer, res[i].partition,
								  "Kafka served offsets below the stored position %lld (topic recreated?); nothing written",
								  (long long) res[i].stored_offset);
			else if (res[i].stored_offset < 0)
				ereport(WARNING,
						(errmsg("clickstream consumer %d: %s[%d] has no stored position any more; %lld messages not written",
								my_consumer, open_topic, res[i].partition,
								(long long) res[i].messages),
						 errdetail("Its row of clickstream.ingest_positions was deleted while the partition was read; it resumes at %s.",
								   resume_at)));
			else
				ereport(WARNING,
						(errmsg("clickstream consumer %d: %s[%d] was moved by another consumer; %lld messages not written",
								my_consumer, open_topic, res[i].partition,
								(long long) res[i].messages),
						 errdetail("The stored position is %lld; this consumer resumes from there.",
								   (long long) res[i].stored_offset)));
			continue;
		}
		commit[ncommit].partition = res[i].partition;
		commit[ncommit].offset = res[i].next_offset;
		ncommit++;
		StatusPartitionProgress(my_consumer, open_topic, res[i].partition,
								res[i].next_offset, res[i].messages,
								res[i].bytes, now);
		StatusPartitionWatermark(open_topic, res[i].partition,
								 KafkaHighWatermark(res[i].partition), 0);
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
	consumer_abandoned = false;
	partitions_paused = false;
}

/* Once a second: publish statistics, notice DROP EXTENSION while idle. */
static void
WorkerTick(void)
{
	const int32 *parts;
	int			n = KafkaAssignment(&parts);

	KafkaCheckBrokers();
	StatusWorkerTick(my_consumer, n);
	WorkerRefreshWatermarks();
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

		if (consumer_abandoned)
			return;
		got = KafkaPoll((int) timeout, &msg);
		if (extension_gone || consumer_abandoned)
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

		if (ConfigReloadPending || settings_reloaded)
		{
			if (ConfigReloadPending)
			{
				ConfigReloadPending = false;
				ProcessConfigFile(PGC_SIGHUP);
			}
			settings_reloaded = false;
			/* the options file is read again: its contents may have changed */
			if (KafkaIsOpen() && WorkerKafkaSettingsChanged())
			{
				ereport(LOG,
						(errmsg("clickstream consumer %d: Kafka settings changed, reconnecting",
								my_consumer)));
				WorkerCloseConsumer();
			}
		}

		if ((extension_gone || consumer_abandoned) && KafkaIsOpen())
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
