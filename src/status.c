/*-------------------------------------------------------------------------
 *
 * status.c
 *	  Shared-memory statistics of the ingestion workers, and the SQL
 *	  functions that read them (clickstream.worker_states() and
 *	  clickstream.worker_partitions(), behind the clickstream.status view).
 *
 * The worker must not write a table for every statistic, so rates, high
 * watermarks and errors live here; durable positions live in tables.  One
 * LWLock protects the whole area: writers take it once per batch or once a
 * second, readers copy what they need under a shared lock.
 *
 * Rates over the last minute come from a ring of cumulative samples taken
 * every RATE_SAMPLE_SECS seconds: rate = (total now - total at the oldest
 * sample younger than a minute) / elapsed time.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#define RATE_SAMPLES 14
#define RATE_SAMPLE_SECS 5
#define RATE_WINDOW_SECS 60

typedef struct PartitionStat
{
	bool		used;
	int			consumer;
	char		topic[CLICKSTREAM_TOPIC_LEN];
	int32		partition;
	int64		next_offset;
	int64		high_watermark;
	TimestampTz high_watermark_at;	/* when the broker last reported it */
	int64		messages;
	int64		bytes;
	TimestampTz last_batch_at;
	char		last_error[CLICKSTREAM_ERROR_LEN];
	TimestampTz last_error_at;
	int			sample_next;
	TimestampTz sample_time[RATE_SAMPLES];
	int64		sample_messages[RATE_SAMPLES];
	int64		sample_bytes[RATE_SAMPLES];
} PartitionStat;

typedef struct WorkerStat
{
	int			pid;
	WorkerState state;
	int			nassigned;
	int64		batches;
	TimestampTz started_at;
	TimestampTz last_batch_at;
	char		last_error[CLICKSTREAM_ERROR_LEN];
	TimestampTz last_error_at;
	char		waiting_for[CLICKSTREAM_ERROR_LEN]; /* while blocked */
	TimestampTz blocked_since;
	WorkerState unblocked_state;	/* the state before it was blocked */
} WorkerStat;

typedef struct StatusShared
{
	LWLock	   *lock;
	int			npartitions;
	bool		database_missing[CLICKSTREAM_MAX_CONSUMERS];
	WorkerStat	workers[CLICKSTREAM_MAX_CONSUMERS];
	PartitionStat partitions[FLEXIBLE_ARRAY_MEMBER];
} StatusShared;

static StatusShared *status = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static const char *const state_names[] = {
	[WORKER_STOPPED] = "stopped",
	[WORKER_STARTING] = "starting",
	[WORKER_WAITING_FOR_EXTENSION] = "waiting_for_extension",
	[WORKER_DISABLED] = "disabled",
	[WORKER_CONNECTING] = "connecting",
	[WORKER_CONSUMING] = "consuming",
	[WORKER_BROKER_DOWN] = "broker_down",
	[WORKER_BLOCKED] = "blocked",
};

PG_FUNCTION_INFO_V1(clickstream_worker_states);
PG_FUNCTION_INFO_V1(clickstream_worker_partitions);

/* Size of the shared status area for cs_max_partitions partitions. */
static Size
StatusShmemSize(void)
{
	return add_size(offsetof(StatusShared, partitions),
					mul_size(cs_max_partitions, sizeof(PartitionStat)));
}

/* Ask for the shared memory and the lock. */
static void
StatusShmemRequest(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(StatusShmemSize());
	RequestNamedLWLockTranche("clickstream", 1);
}

/* Attach to (or create) the shared status area. */
static void
StatusShmemStartup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	status = ShmemInitStruct("clickstream status", StatusShmemSize(), &found);
	if (!found)
	{
		memset(status, 0, StatusShmemSize());
		status->lock = &(GetNamedLWLockTranche("clickstream"))->lock;
		status->npartitions = cs_max_partitions;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Install the shared memory hooks; called from _PG_init. */
void
StatusInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = StatusShmemRequest;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = StatusShmemStartup;
}

/* Find the slot of (topic, partition), claiming a free one if asked. */
static PartitionStat *
StatusFindPartition(const char *topic, int partition, bool create)
{
	PartitionStat *free_slot = NULL;

	for (int i = 0; i < status->npartitions; i++)
	{
		PartitionStat *p = &status->partitions[i];

		if (!p->used)
		{
			if (free_slot == NULL)
				free_slot = p;
			continue;
		}
		if (p->partition == partition && strcmp(p->topic, topic) == 0)
			return p;
	}
	if (!create || free_slot == NULL)
		return NULL;

	memset(free_slot, 0, sizeof(PartitionStat));
	free_slot->used = true;
	strlcpy(free_slot->topic, topic, sizeof(free_slot->topic));
	free_slot->partition = partition;
	free_slot->next_offset = -1;
	free_slot->high_watermark = -1;
	return free_slot;
}

/* Record a new rate sample if the newest one is old enough. */
static void
StatusSample(PartitionStat *p, TimestampTz now)
{
	int			newest = (p->sample_next + RATE_SAMPLES - 1) % RATE_SAMPLES;

	if (p->sample_time[newest] != 0 &&
		!TimestampDifferenceExceeds(p->sample_time[newest], now,
									RATE_SAMPLE_SECS * 1000))
		return;
	p->sample_time[p->sample_next] = now;
	p->sample_messages[p->sample_next] = p->messages;
	p->sample_bytes[p->sample_next] = p->bytes;
	p->sample_next = (p->sample_next + 1) % RATE_SAMPLES;
}

/* Mark this worker's slot as started by the current process. */
void
StatusWorkerStart(int consumer)
{
	WorkerStat *w = &status->workers[consumer];

	LWLockAcquire(status->lock, LW_EXCLUSIVE);
	w->pid = MyProcPid;
	w->state = WORKER_STARTING;
	w->nassigned = 0;
	w->started_at = GetCurrentTimestamp();
	w->waiting_for[0] = '\0';
	w->blocked_since = 0;
	LWLockRelease(status->lock);
}

/* Remember (across restarts of a worker) whether its database was missing. */
void
StatusSetDatabaseMissing(int consumer, bool missing)
{
	status->database_missing[consumer] = missing;
}

/* Did the previous incarnation of this worker find no database? */
bool
StatusDatabaseMissing(int consumer)
{
	return status->database_missing[consumer];
}

/* Publish the worker's state. */
void
StatusWorkerSetState(int consumer, WorkerState state)
{
	LWLockAcquire(status->lock, LW_EXCLUSIVE);
	status->workers[consumer].state = state;
	if (state == WORKER_STOPPED)
		status->workers[consumer].pid = 0;
	if (state != WORKER_BLOCKED)
	{
		status->workers[consumer].waiting_for[0] = '\0';
		status->workers[consumer].blocked_since = 0;
	}
	LWLockRelease(status->lock);
}

/*
 * Publish that the worker cannot write: state blocked, on what, and since
 * when.  Called again while it waits, to update what it waits on.
 */
void
StatusWorkerSetBlocked(int consumer, const char *waiting_for, TimestampTz since)
{
	WorkerStat *w = &status->workers[consumer];

	LWLockAcquire(status->lock, LW_EXCLUSIVE);
	if (w->state != WORKER_BLOCKED)
		w->unblocked_state = w->state;
	w->state = WORKER_BLOCKED;
	strlcpy(w->waiting_for, waiting_for, CLICKSTREAM_ERROR_LEN);
	w->blocked_since = since;
	LWLockRelease(status->lock);
}

/*
 * The worker wrote (or gave up) after being blocked: restore the state it
 * had before, which is returned.
 */
WorkerState
StatusWorkerSetUnblocked(int consumer)
{
	WorkerStat *w = &status->workers[consumer];
	WorkerState state;

	LWLockAcquire(status->lock, LW_EXCLUSIVE);
	if (w->state == WORKER_BLOCKED)
		w->state = w->unblocked_state;
	state = w->state;
	w->waiting_for[0] = '\0';
	w->blocked_since = 0;
	LWLockRelease(status->lock);
	return state;
}

/* Record the last error of a worker, and of one partition if >= 0. */
void
StatusWorkerError(int consumer, int partition, const char *fmt,...)
{
	char		msg[CLICKSTREAM_ERROR_LEN];
	va_list		ap;
	TimestampTz now = GetCurrentTimestamp();

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	LWLockAcquire(status->lock, LW_EXCLUSIVE);
	strlcpy(status->workers[consumer].last_error, msg, CLICKSTREAM_ERROR_LEN);
	status->workers[consumer].last_error_at = now;
	if (partition >= 0)
	{
		for (int i = 0; i < status->npartitions; i++)
		{
			PartitionStat *p = &status->partitions[i];

			if (p->used && p->consumer == consumer && p->partition == partition)
			{
				strlcpy(p->last_error, msg, CLICKSTREAM_ERROR_LEN);
				p->last_error_at = now;
			}
		}
	}
	LWLockRelease(status->lock);
}

/* Note that a consumer now owns a partition, starting at next_offset (-1: none stored). */
void
StatusPartitionAssigned(int consumer, const char *topic, int partition,
						int64 next_offset)
{
	PartitionStat *p;

	LWLockAcquire(status->lock, LW_EXCLUSIVE);
	p = StatusFindPartition(topic, partition, true);
	if (p != NULL)
	{
		p->consumer = consumer;
		p->next_offset = next_offset;
	}
	LWLockRelease(status->lock);
}

/* Account a committed batch's rows of one partition. */
void
StatusPartitionProgress(int consumer, const char *topic, int partition,
						int64 next_offset, int64 messages, int64 bytes,
						TimestampTz batch_time)
{
	PartitionStat *p;

	LWLockAcquire(status->lock, LW_EXCLUSIVE);
	p = StatusFindPartition(topic, partition, true);
	if (p != NULL)
	{
		p->consumer = consumer;
		p->next_offset = next_offset;
		p->messages += messages;
		p->bytes += bytes;
		p->last_batch_at = batch_time;
		StatusSample(p, batch_time);
	}
	status->workers[consumer].batches++;
	status->workers[consumer].last_batch_at = batch_time;
	LWLockRelease(status->lock);
}

/*
 * Publish a partition's high watermark.  answered_at: when the broker
 * answered a query for it; 0 for the value librdkafka cached from a fetch at
 * an unknown time, which only moves the watermark forward and leaves
 * high_watermark_at alone.
 */
void
StatusPartitionWatermark(const char *topic, int partition, int64 high,
						 TimestampTz answered_at)
{
	PartitionStat *p;

	if (high < 0)
		return;
	LWLockAcquire(status->lock, LW_EXCLUSIVE);
	p = StatusFindPartition(topic, partition, false);
	if (p != NULL && (answered_at != 0 || high > p->high_watermark))
		p->high_watermark = high;
	if (p != NULL && answered_at != 0)
		p->high_watermark_at = answered_at;
	LWLockRelease(status->lock);
}

/* Once a second: keep the rate samples of idle partitions moving. */
void
StatusWorkerTick(int consumer, int nassigned)
{
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(status->lock, LW_EXCLUSIVE);
	status->workers[consumer].nassigned = nassigned;
	for (int i = 0; i < status->npartitions; i++)
	{
		PartitionStat *p = &status->partitions[i];

		if (p->used && p->consumer == consumer)
			StatusSample(p, now);
	}
	LWLockRelease(status->lock);
}

/* Rate per second of a cumulative counter over the last minute. */
static double
StatusRate(const PartitionStat *p, bool bytes, TimestampTz now)
{
	int			oldest = -1;

	for (int i = 0; i < RATE_SAMPLES; i++)
	{
		if (p->sample_time[i] == 0 ||
			TimestampDifferenceExceeds(p->sample_time[i], now,
									   RATE_WINDOW_SECS * 1000))
			continue;
		if (oldest < 0 || p->sample_time[i] < p->sample_time[oldest])
			oldest = i;
	}
	if (oldest < 0 || now <= p->sample_time[oldest])
		return 0.0;
	return (double) ((bytes ? p->bytes : p->messages) -
					 (bytes ? p->sample_bytes[oldest] : p->sample_messages[oldest])) /
		((double) (now - p->sample_time[oldest]) / USECS_PER_SEC);
}

/* Return a timestamp datum, NULL when unset. */
static Datum
TimestampOrNull(TimestampTz ts, bool *isnull)
{
	*isnull = (ts == 0);
	return TimestampTzGetDatum(ts);
}

/* SQL: one row per ingestion worker. */
Datum
clickstream_worker_states(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	WorkerStat	copy[CLICKSTREAM_MAX_CONSUMERS];
	int			n = cs_consumers;

	InitMaterializedSRF(fcinfo, 0);
	if (status == NULL)
		PG_RETURN_VOID();

	LWLockAcquire(status->lock, LW_SHARED);
	memcpy(copy, status->workers, sizeof(WorkerStat) * n);
	LWLockRelease(status->lock);

	for (int i = 0; i < n; i++)
	{
		Datum		values[11];
		bool		nulls[11] = {0};
		WorkerStat *w = &copy[i];

		values[0] = Int32GetDatum(i);
		values[1] = Int32GetDatum(w->pid);
		nulls[1] = (w->pid == 0);
		values[2] = CStringGetTextDatum(state_names[w->state]);
		values[3] = Int32GetDatum(w->nassigned);
		values[4] = Int64GetDatum(w->batches);
		values[5] = TimestampOrNull(w->last_batch_at, &nulls[5]);
		values[6] = CStringGetTextDatum(w->last_error);
		nulls[6] = (w->last_error[0] == '\0');
		values[7] = TimestampOrNull(w->last_error_at, &nulls[7]);
		values[8] = TimestampOrNull(w->started_at, &nulls[8]);
		values[9] = CStringGetTextDatum(w->waiting_for);
		nulls[9] = (w->state != WORKER_BLOCKED || w->waiting_for[0] == '\0');
		values[10] = TimestampOrNull(w->blocked_since, &nulls[10]);
		nulls[10] |= (w->state != WORKER_BLOCKED);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

/* SQL: one row per partition known to the workers since server start. */
Datum
clickstream_worker_partitions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PartitionStat *copy;
	int			n = 0;
	TimestampTz now = GetCurrentTimestamp();

	InitMaterializedSRF(fcinfo, 0);
	if (status == NULL)
		PG_RETURN_VOID();

	copy = palloc(sizeof(PartitionStat) * status->npartitions);
	LWLockAcquire(status->lock, LW_SHARED);
	for (int i = 0; i < status->npartitions; i++)
		if (status->partitions[i].used)
			copy[n++] = status->partitions[i];
	LWLockRelease(status->lock);

	for (int i = 0; i < n; i++)
	{
		Datum		values[13];
		bool		nulls[13] = {0};
		PartitionStat *p = &copy[i];

		values[0] = Int32GetDatum(p->consumer);
		values[1] = CStringGetTextDatum(p->topic);
		values[2] = Int32GetDatum(p->partition);
		values[3] = Int64GetDatum(p->next_offset);
		nulls[3] = (p->next_offset < 0);
		values[4] = Int64GetDatum(p->high_watermark);
		nulls[4] = (p->high_watermark < 0);
		values[5] = Int64GetDatum(p->messages);
		values[6] = Int64GetDatum(p->bytes);
		values[7] = Float8GetDatum(StatusRate(p, false, now));
		values[8] = Float8GetDatum(StatusRate(p, true, now));
		values[9] = TimestampOrNull(p->last_batch_at, &nulls[9]);
		values[10] = CStringGetTextDatum(p->last_error);
		nulls[10] = (p->last_error[0] == '\0');
		values[11] = TimestampOrNull(p->last_error_at, &nulls[11]);
		values[12] = TimestampOrNull(p->high_watermark_at, &nulls[12]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
