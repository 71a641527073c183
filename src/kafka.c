/*-------------------------------------------------------------------------
 *
 * kafka.c
 *	  The Kafka consumer of an ingestion worker; the only file that includes
 *	  librdkafka.
 *
 * librdkafka runs threads of its own, and no PostgreSQL function may ever be
 * called from them.  So:
 *	  - all signals are blocked while rd_kafka_new() creates those threads,
 *	    which inherit the mask and so never run a PostgreSQL signal handler;
 *	  - log.queue=true keeps log lines in a queue that is forwarded, with the
 *	    main queue, to the consumer queue; they and every other callback
 *	    (errors, rebalances, commit results) run inside KafkaPoll(), in the
 *	    worker's own thread, where elog() is allowed;
 *	  - callbacks never raise ERROR from inside librdkafka, except through the
 *	    rebalance hooks, whose ERROR ends the process anyway.
 *
 * Settings: the extension's defaults, then clickstream.kafka_options, then
 * the lines of clickstream.kafka_options_file (read in the worker's thread
 * at every connection and reload, refused when group or others may access
 * it, never logged: a bad line is reported by key and line number), then
 * what correctness relies on.
 *
 * Positions come from the database, never from the group: on assignment the
 * worker's hook looks them up and the partitions are assigned at exactly
 * those offsets.  Auto-commit is off; KafkaCommit() is called only after the
 * PostgreSQL commit, so that lag tools see real progress.
 *
 * Memory: librdkafka prefetches at most queued.max.messages.kbytes
 * (clickstream.fetch_buffer) and asks for fetch responses of at most half of
 * that per broker connection.  A full queue stops fetching until the broker
 * thread wakes up; KafkaPoll() wakes it as the queue drains (see
 * KafkaWakeFetchers), so a small buffer keeps the worker fed.  A broker may
 * overshoot fetch.max.bytes to return whole record batches, so
 * receive.message.max.bytes keeps its large default: it only caps one
 * response, buffers follow the actual size.  A consumed message is released
 * at the next poll: the batch keeps its own copy.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define DOWN_WARNING_INTERVAL_MS 60000
/* Largest clickstream.kafka_options_file read. */
#define OPTIONS_FILE_MAX_BYTES (1024 * 1024)

static rd_kafka_t *kafka = NULL;
static rd_kafka_message_t *current = NULL;
static int	my_consumer = 0;
static char my_topic[CLICKSTREAM_TOPIC_LEN];
static KafkaAssignHook assign_hook = NULL;
static KafkaRevokeHook revoke_hook = NULL;
static bool brokers_down = false;
static TimestampTz last_down_warning = 0;
static bool in_rebalance = false;

/*
 * Bytes consumed since the fetchers were last woken up (KafkaWakeFetchers),
 * and how many bytes trigger the next wake-up.
 */
static size_t consumed_since_wakeup = 0;
static size_t wakeup_bytes = 0;

/* Current assignment, kept for statistics. */
static int32 *assigned = NULL;
static int	nassigned = 0;

/*
 * Per assigned partition (same index): has it delivered a message since it
 * was assigned (so that librdkafka's application position is its own), and
 * did KafkaPauseAll() pause it?
 */
static bool *delivered = NULL;
static bool *paused = NULL;

/*
 * The contents of clickstream.kafka_options_file the open consumer was
 * created with (NULL: no file), to notice a change on reload.  Secrets: kept
 * in memory only, never logged, zeroed when dropped.
 */
static char *options_file_used = NULL;
static int	options_file_used_len = 0;

/* Header arrays handed out with the current message. */
static const char **hdr_keys = NULL;
static const char **hdr_values = NULL;
static size_t *hdr_lens = NULL;
static int	hdr_capacity = 0;

/* Map a syslog level from librdkafka to an elog level. */
static int
KafkaElevel(int level)
{
	if (level <= 4)
		return WARNING;
	if (level <= 6)
		return LOG;
	return DEBUG1;
}

/* Log callback: runs inside KafkaPoll() thanks to log.queue. */
static void
KafkaLogCallback(const rd_kafka_t *rk, int level, const char *fac,
				 const char *buf)
{
	ereport(KafkaElevel(level),
			(errmsg("clickstream consumer %d: librdkafka %s: %s",
					my_consumer, fac, buf),
			 errhidestmt(true)));
}

/* Error callback: broker trouble is retried forever, with a WARNING. */
static void
KafkaErrorCallback(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	TimestampTz now = GetCurrentTimestamp();

	StatusWorkerError(my_consumer, -1, "%s: %s", rd_kafka_err2name(err), reason);

	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
		err == RD_KAFKA_RESP_ERR__TRANSPORT ||
		err == RD_KAFKA_RESP_ERR__RESOLVE)
	{
		if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
		{
			brokers_down = true;
			StatusWorkerSetState(my_consumer, WORKER_BROKER_DOWN);
		}
		if (last_down_warning == 0 ||
			TimestampDifferenceExceeds(last_down_warning, now,
									   DOWN_WARNING_INTERVAL_MS))
		{
			last_down_warning = now;
			ereport(WARNING,
					(errmsg("clickstream consumer %d cannot reach Kafka: %s",
							my_consumer, reason),
					 errdetail("librdkafka reconnects on its own; ingestion resumes from the stored position when a broker answers."),
					 errhint("Check clickstream.brokers (\"%s\"), clickstream.kafka_options and clickstream.kafka_options_file.",
							 cs_brokers)));
		}
		return;
	}

	ereport(WARNING,
			(errmsg("clickstream consumer %d: Kafka error %s: %s",
					my_consumer, rd_kafka_err2name(err), reason)));
}

/* Commit callback: the group commit is informational only. */
static void
KafkaCommitCallback(rd_kafka_t *rk, rd_kafka_resp_err_t err,
					rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
		ereport(LOG,
				(errmsg("clickstream consumer %d could not commit offsets to Kafka group \"%s\": %s",
						my_consumer, cs_group_id, rd_kafka_err2str(err)),
				 errdetail("Positions are stored in the database; only lag tools see the older group offsets.")));
}

/* Remember the partitions of the current assignment. */
static void
KafkaSetAssignment(rd_kafka_topic_partition_list_t *parts, bool add)
{
	if (!add)
	{
		/* remove the listed partitions (all of them for an eager revoke) */
		int			kept = 0;

		for (int i = 0; i < nassigned; i++)
		{
			bool		revoked = (parts == NULL);

			for (int j = 0; parts != NULL && j < parts->cnt; j++)
				if (parts->elems[j].partition == assigned[i])
					revoked = true;
			if (!revoked)
			{
				delivered[kept] = delivered[i];
				paused[kept] = paused[i];
				assigned[kept++] = assigned[i];
			}
		}
		nassigned = kept;
		return;
	}
	if (parts->cnt > 0)
	{
		int32	   *grown = realloc(assigned, sizeof(int32) * (nassigned + parts->cnt));
		bool	   *grown_delivered = realloc(delivered, sizeof(bool) * (nassigned + parts->cnt));
		bool	   *grown_paused = realloc(paused, sizeof(bool) * (nassigned + parts->cnt));

		if (grown != NULL)
			assigned = grown;
		if (grown_delivered != NULL)
			delivered = grown_delivered;
		if (grown_paused != NULL)
			paused = grown_paused;
		if (grown == NULL || grown_delivered == NULL || grown_paused == NULL)
			elog(FATAL, "out of memory");
	}
	for (int i = 0; i < parts->cnt; i++)
	{
		delivered[nassigned] = false;
		paused[nassigned] = false;
		assigned[nassigned++] = parts->elems[i].partition;
	}
}

/*
 * Rebalance callback: on assignment, start every partition at the position
 * stored in the database; on revocation, write the pending batch first so
 * that the next owner finds the position that matches bronze.
 */
static void
KafkaRebalanceCallback(rd_kafka_t *rk, rd_kafka_resp_err_t err,
					   rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	bool		cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
	rd_kafka_error_t *error = NULL;
	rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;

	/* an ERROR from a hook ends the process: no need to reset this flag */
	in_rebalance = true;
	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
	{
		KafkaPosition *pos = palloc(sizeof(KafkaPosition) * Max(parts->cnt, 1));

		for (int i = 0; i < parts->cnt; i++)
		{
			pos[i].partition = parts->elems[i].partition;
			pos[i].offset = -1;
		}
		assign_hook(pos, parts->cnt);
		for (int i = 0; i < parts->cnt; i++)
		{
			if (pos[i].offset >= 0)
				parts->elems[i].offset = pos[i].offset;
			else if (cs_start_offset == START_OFFSET_LATEST)
				parts->elems[i].offset = RD_KAFKA_OFFSET_END;
			else
				parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
			StatusPartitionAssigned(my_consumer, my_topic, pos[i].partition,
									pos[i].offset);
			ereport(LOG,
					(errmsg("clickstream consumer %d assigned %s[%d] at %s",
							my_consumer, my_topic, pos[i].partition,
							pos[i].offset >= 0 ? psprintf(INT64_FORMAT, pos[i].offset) :
							(cs_start_offset == START_OFFSET_LATEST ? "latest" : "earliest"))));
		}
		pfree(pos);
		if (cooperative)
			error = rd_kafka_incremental_assign(rk, parts);
		else
			aerr = rd_kafka_assign(rk, parts);
		KafkaSetAssignment(parts, true);

		/*
		 * librdkafka keeps a partition's pause across a reassignment: one
		 * paused by KafkaPauseAll() before it was revoked would never fetch
		 * again.  Resuming only clears that flag (a partition that is not
		 * paused is left alone); fetching starts at the offset set above.
		 */
		(void) rd_kafka_resume_partitions(rk, parts);
	}
	else
	{
		revoke_hook();
		if (cooperative)
			error = rd_kafka_incremental_unassign(rk, parts);
		else
			aerr = rd_kafka_assign(rk, NULL);
		KafkaSetAssignment(cooperative ? parts : NULL, false);
		ereport(LOG,
				(errmsg("clickstream consumer %d: %d partitions revoked",
						my_consumer, parts->cnt)));
	}
	in_rebalance = false;

	if (error != NULL)
	{
		ereport(WARNING,
				(errmsg("clickstream consumer %d could not change its assignment: %s",
						my_consumer, rd_kafka_error_string(error))));
		rd_kafka_error_destroy(error);
	}
	else if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR)
		ereport(WARNING,
				(errmsg("clickstream consumer %d could not change its assignment: %s",
						my_consumer, rd_kafka_err2str(aerr))));
}

/* Zero and free a copy of the options file's contents. */
static void
KafkaForgetOptionsFile(char **contents, int *len)
{
	if (*contents != NULL)
	{
		explicit_bzero(*contents, *len);
		pfree(*contents);
	}
	*contents = NULL;
	*len = 0;
}

/*
 * Read clickstream.kafka_options_file into *contents (NULL when the setting
 * is empty).  The file must be a regular file that neither group nor others
 * may access, as for a server's SSL key.  Returns false, after a WARNING
 * that names the file but shows none of its contents, when it is unusable.
 */
static bool
KafkaReadOptionsFile(char **contents, int *len)
{
	const char *path = cs_kafka_options_file;
	struct stat st;
	int			fd;
	char	   *buf;
	ssize_t		got = 0;

	*contents = NULL;
	*len = 0;
	if (path == NULL || path[0] == '\0')
		return true;
	fd = open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("clickstream consumer %d could not open clickstream.kafka_options_file \"%s\": %m",
						my_consumer, path),
				 errhint("Fix the file or the setting, then reload the configuration.")));
		return false;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > OPTIONS_FILE_MAX_BYTES)
	{
		close(fd);
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("clickstream.kafka_options_file \"%s\" is not a regular file of at most %d bytes",
						path, OPTIONS_FILE_MAX_BYTES)));
		return false;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		close(fd);
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("clickstream.kafka_options_file \"%s\" is accessible to group or others (mode %04o); not using it",
						path, (unsigned int) (st.st_mode & 07777)),
				 errdetail("It holds secrets: only the server's operating system user may read it."),
				 errhint("Run chmod 600 on it (owned by the user the server runs as), then reload the configuration.")));
		return false;
	}
	buf = palloc(st.st_size + 1);
	while (got < st.st_size)
	{
		ssize_t		r = read(fd, buf + got, st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += r;
	}
	close(fd);
	if (got != st.st_size)
	{
		explicit_bzero(buf, st.st_size + 1);
		pfree(buf);
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("clickstream consumer %d could not read clickstream.kafka_options_file \"%s\"",
						my_consumer, path)));
		return false;
	}
	buf[got] = '\0';
	*contents = buf;
	*len = got;
	return true;
}

/* Has the options file changed since the open consumer read it? */
bool
KafkaOptionsFileChanged(void)
{
	char	   *contents;
	int			len;
	bool		changed;

	if (!KafkaReadOptionsFile(&contents, &len))
		return true;			/* reconnecting reports the problem */
	changed = (contents == NULL) != (options_file_used == NULL) ||
		len != options_file_used_len ||
		(len > 0 && memcmp(contents, options_file_used, len) != 0);
	KafkaForgetOptionsFile(&contents, &len);
	return changed;
}

/* Set one librdkafka property, reporting a bad one as a WARNING. */
static bool
KafkaConfSet(rd_kafka_conf_t *conf, const char *key, const char *value)
{
	char		errstr[512];

	if (rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("clickstream consumer %d: invalid Kafka setting \"%s\": %s",
						my_consumer, key, errstr),
				 errhint("Fix clickstream.kafka_options (key=value,key=value) and reload the configuration.")));
		return false;
	}
	return true;
}

/* Apply clickstream.kafka_options, a comma-separated key=value list. */
static bool
KafkaConfApplyOptions(rd_kafka_conf_t *conf, const char *options)
{
	char	   *copy = pstrdup(options);
	char	   *saveptr = NULL;
	bool		ok = true;

	for (char *item = strtok_r(copy, ",", &saveptr); item != NULL;
		 item = strtok_r(NULL, ",", &saveptr))
	{
		char	   *eq = strchr(item, '=');
		char	   *key = item;

		while (*key == ' ')
			key++;
		if (*key == '\0')
			continue;
		if (eq == NULL)
		{
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("clickstream.kafka_options entry \"%s\" has no \"=\"", key),
					 errhint("Write it as key=value,key=value.")));
			ok = false;
			continue;
		}
		*eq = '\0';
		ok &= KafkaConfSet(conf, key, eq + 1);
	}
	pfree(copy);
	return ok;
}

/*
 * Set the property of one line of the options file.  A bad one is reported
 * by key and line; librdkafka's message is shown with the value hidden.
 */
static bool
KafkaConfSetSecret(rd_kafka_conf_t *conf, const char *key, const char *value,
				   int line)
{
	char		errstr[512];
	StringInfoData msg;
	size_t		vlen = strlen(value);

	/* a key that is no property name may be a misplaced secret: not shown */
	if (key[0] == '\0' || strspn(key, "abcdefghijklmnopqrstuvwxyz0123456789._-") != strlen(key))
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("clickstream consumer %d: line %d of clickstream.kafka_options_file \"%s\" does not start with a property name",
						my_consumer, line, cs_kafka_options_file),
				 errhint("Write one key=value per line, such as sasl.password=...")));
		return false;
	}
	if (rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK)
		return true;
	initStringInfo(&msg);
	for (const char *p = errstr; *p;)
	{
		if (vlen > 0 && strncmp(p, value, vlen) == 0)
		{
			appendStringInfoString(&msg, "(hidden)");
			p += vlen;
		}
		else
			appendStringInfoChar(&msg, *p++);
	}
	explicit_bzero(errstr, sizeof(errstr));
	ereport(WARNING,
			(errcode(ERRCODE_CONFIG_FILE_ERROR),
			 errmsg("clickstream consumer %d: invalid Kafka setting \"%s\" at line %d of clickstream.kafka_options_file \"%s\": %s",
					my_consumer, key, line, cs_kafka_options_file, msg.data),
			 errhint("Fix the file and reload the configuration.")));
	pfree(msg.data);
	return false;
}

/*
 * Apply the options file: librdkafka properties, one key=value per line
 * (blank lines and lines starting with # are skipped; spaces around the key
 * and the value are ignored; the value runs to the end of the line, commas
 * and = included).  contents is left as it was.
 */
static bool
KafkaConfApplyFile(rd_kafka_conf_t *conf, const char *contents, int len)
{
	char	   *copy = palloc(len + 1);
	char	   *line = copy;
	int			lineno = 0;
	bool		ok = true;

	memcpy(copy, contents, len);
	copy[len] = '\0';
	while (line != NULL)
	{
		char	   *next = strchr(line, '\n');
		char	   *eq;
		char	   *key;
		char	   *value;
		char	   *end;

		if (next != NULL)
			*next++ = '\0';
		lineno++;
		key = line;
		line = next;
		while (*key == ' ' || *key == '\t')
			key++;
		if (*key == '\0' || *key == '\r' || *key == '#')
			continue;
		eq = strchr(key, '=');
		if (eq == NULL)
		{
			ereport(WARNING,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("clickstream consumer %d: line %d of clickstream.kafka_options_file \"%s\" has no \"=\"",
							my_consumer, lineno, cs_kafka_options_file),
					 errhint("Write one key=value per line.")));
			ok = false;
			continue;
		}
		value = eq + 1;
		for (end = eq; end > key && (end[-1] == ' ' || end[-1] == '\t'); end--)
			;
		*end = '\0';
		while (*value == ' ' || *value == '\t')
			value++;
		for (end = value + strlen(value);
			 end > value && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'); end--)
			;
		*end = '\0';
		ok &= KafkaConfSetSecret(conf, key, value, lineno);
	}
	explicit_bzero(copy, len + 1);
	pfree(copy);
	return ok;
}

/*
 * Create the consumer and subscribe to clickstream.topic.  Returns false
 * (after a WARNING) when the configuration is unusable; the caller retries
 * after the next reload.
 */
bool
KafkaOpen(int consumer, KafkaAssignHook on_assign, KafkaRevokeHook on_revoke)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *topics;
	rd_kafka_resp_err_t err;
	char		errstr[512];
	char		num[32];
	int			fetch_max = Max(cs_fetch_buffer_kb / 2, 512) * 1024;
	bool		ok = true;
	bool		file_ok;
	MemoryContext old_cxt;
	sigset_t	all,
				old;

	Assert(kafka == NULL);
	my_consumer = consumer;
	assign_hook = on_assign;
	revoke_hook = on_revoke;
	brokers_down = false;
	nassigned = 0;
	consumed_since_wakeup = 0;
	/* a few wake-ups per prefetch buffer drained */
	wakeup_bytes = (size_t) cs_fetch_buffer_kb * 1024 / 8;
	strlcpy(my_topic, cs_topic, sizeof(my_topic));

	ok &= KafkaConfSet(conf, "bootstrap.servers", cs_brokers);
	ok &= KafkaConfSet(conf, "group.id", cs_group_id);
	snprintf(num, sizeof(num), "clickstream-%d", consumer);
	ok &= KafkaConfSet(conf, "client.id", num);
	ok &= KafkaConfSet(conf, "auto.offset.reset", "earliest");
	ok &= KafkaConfSet(conf, "session.timeout.ms", "10000");
	snprintf(num, sizeof(num), "%d", cs_fetch_buffer_kb);
	ok &= KafkaConfSet(conf, "queued.max.messages.kbytes", num);
	snprintf(num, sizeof(num), "%d", fetch_max);
	ok &= KafkaConfSet(conf, "fetch.max.bytes", num);
	snprintf(num, sizeof(num), "%d", Min(fetch_max, 1048576));
	ok &= KafkaConfSet(conf, "max.partition.fetch.bytes", num);
	ok &= KafkaConfApplyOptions(conf, cs_kafka_options);
	KafkaForgetOptionsFile(&options_file_used, &options_file_used_len);
	old_cxt = MemoryContextSwitchTo(TopMemoryContext);
	file_ok = KafkaReadOptionsFile(&options_file_used, &options_file_used_len);
	MemoryContextSwitchTo(old_cxt);
	if (!file_ok)
		ok = false;
	else if (options_file_used != NULL)
		ok &= KafkaConfApplyFile(conf, options_file_used, options_file_used_len);

	/* after the user's options: what correctness and thread safety rely on */
	ok &= KafkaConfSet(conf, "enable.auto.commit", "false");
	ok &= KafkaConfSet(conf, "enable.auto.offset.store", "false");
	ok &= KafkaConfSet(conf, "enable.partition.eof", "false");
	ok &= KafkaConfSet(conf, "log.queue", "true");
	if (!ok)
	{
		rd_kafka_conf_destroy(conf);
		return false;
	}

	rd_kafka_conf_set_log_cb(conf, KafkaLogCallback);
	rd_kafka_conf_set_error_cb(conf, KafkaErrorCallback);
	rd_kafka_conf_set_rebalance_cb(conf, KafkaRebalanceCallback);
	rd_kafka_conf_set_offset_commit_cb(conf, KafkaCommitCallback);

	/* librdkafka's threads inherit a mask that blocks every signal */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	kafka = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	if (kafka == NULL)
	{
		rd_kafka_conf_destroy(conf);
		ereport(WARNING,
				(errmsg("clickstream consumer %d could not create a Kafka consumer: %s",
						consumer, errstr),
				 errhint("Check clickstream.brokers, clickstream.kafka_options and clickstream.kafka_options_file, then reload the configuration.")));
		return false;
	}

	/* logs and the main queue are served by the consumer poll */
	rd_kafka_set_log_queue(kafka, NULL);
	rd_kafka_poll_set_consumer(kafka);

	topics = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(topics, cs_topic, RD_KAFKA_PARTITION_UA);
	err = rd_kafka_subscribe(kafka, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		ereport(WARNING,
				(errmsg("clickstream consumer %d could not subscribe to topic \"%s\": %s",
						consumer, cs_topic, rd_kafka_err2str(err))));
		KafkaClose();
		return false;
	}
	ereport(LOG,
			(errmsg("clickstream consumer %d subscribed to topic \"%s\" on %s as group \"%s\"",
					consumer, cs_topic, cs_brokers, cs_group_id)));
	return true;
}

/*
 * Is a rebalance hook running?  It runs inside librdkafka's poll or close,
 * where KafkaPoll() and pausing must not be called.
 */
bool
KafkaInRebalance(void)
{
	return in_rebalance;
}

/* Is a consumer open? */
bool
KafkaIsOpen(void)
{
	return kafka != NULL;
}

/* Were all brokers down at the last report, with no message since? */
bool
KafkaBrokersDown(void)
{
	return brokers_down;
}

/*
 * While every broker is reported down, ask for metadata (at most 200 ms):
 * an answer means a broker is back, even on a topic with no new message.
 */
void
KafkaCheckBrokers(void)
{
	const struct rd_kafka_metadata *md;

	if (kafka == NULL || !brokers_down)
		return;
	if (rd_kafka_metadata(kafka, 0, NULL, &md, 200) == RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		rd_kafka_metadata_destroy(md);
		brokers_down = false;
		StatusWorkerSetState(my_consumer, WORKER_CONSUMING);
		ereport(LOG,
				(errmsg("clickstream consumer %d reaches Kafka again", my_consumer)));
	}
}

/* The partitions currently assigned to this consumer. */
int
KafkaAssignment(const int32 **partitions)
{
	*partitions = assigned;
	return nassigned;
}

/* Is this message error about the message itself (as opposed to the consumer)? */
static bool
KafkaIsMessageError(rd_kafka_resp_err_t err)
{
	/*
	 * Only errors librdkafka raises for a message it then skips; broker-side
	 * fetch errors are retried at the same offset and are consumer errors.
	 */
	return err == RD_KAFKA_RESP_ERR__BAD_MSG ||
		err == RD_KAFKA_RESP_ERR__BAD_COMPRESSION;
}

/* Fill the header arrays of msg from a librdkafka message. */
static void
KafkaFillHeaders(rd_kafka_message_t *m, KafkaMessage *msg)
{
	rd_kafka_headers_t *hdrs;
	size_t		n;

	msg->nheaders = 0;
	if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return;
	n = rd_kafka_header_cnt(hdrs);
	if ((int) n > hdr_capacity)
	{
		hdr_capacity = Max((int) n, 16);
		hdr_keys = realloc(hdr_keys, sizeof(char *) * hdr_capacity);
		hdr_values = realloc(hdr_values, sizeof(char *) * hdr_capacity);
		hdr_lens = realloc(hdr_lens, sizeof(size_t) * hdr_capacity);
		if (!hdr_keys || !hdr_values || !hdr_lens)
			elog(FATAL, "out of memory");
	}
	for (size_t i = 0; i < n; i++)
	{
		const char *name;
		const void *value;
		size_t		size;

		if (rd_kafka_header_get_all(hdrs, i, &name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
			break;
		hdr_keys[i] = name;
		hdr_values[i] = value;
		hdr_lens[i] = size;
		msg->nheaders++;
	}
	msg->header_keys = hdr_keys;
	msg->header_values = hdr_values;
	msg->header_lens = hdr_lens;
}

/*
 * Wake up the broker threads that fetch our partitions.
 *
 * librdkafka 2.0 stops fetching a partition once the consumer queue holds
 * queued.max.messages.kbytes, and re-evaluates that only when its broker
 * thread wakes up: on an op, on socket IO, or at the end of its 1 s serve
 * window (rd_kafka_max_block_ms in rdkafka_broker.c; fetch.queue.backoff.ms
 * only exists from 2.2).  Draining the queue wakes nothing, so without this
 * the worker idles for up to a second after every full queue.  A ListOffsets
 * request sent to every leader with a zero timeout enqueues an op on each
 * leader's broker thread (a wake-up) and returns at once; its answer is
 * dropped.
 */
static void
KafkaWakeFetchers(void)
{
	rd_kafka_topic_partition_list_t *list;

	consumed_since_wakeup = 0;
	if (kafka == NULL || nassigned == 0)
		return;
	list = rd_kafka_topic_partition_list_new(nassigned);
	for (int i = 0; i < nassigned; i++)
		rd_kafka_topic_partition_list_add(list, my_topic,
										  assigned[i])->offset = RD_KAFKA_OFFSET_END;
	(void) rd_kafka_offsets_for_times(kafka, list, 0);
	rd_kafka_topic_partition_list_destroy(list);
}

/*
 * Wait up to timeout_ms for the next message.  Serves logs, errors and
 * rebalances on the way.  Returns true with *msg filled (valid until the
 * next call) when there is a message or a message-level error.
 */
bool
KafkaPoll(int timeout_ms, KafkaMessage *msg)
{
	rd_kafka_message_t *m;
	rd_kafka_timestamp_type_t tstype;

	if (current != NULL)
	{
		rd_kafka_message_destroy(current);
		current = NULL;
	}

	m = rd_kafka_consumer_poll(kafka, timeout_ms);
	if (m == NULL)
	{
		/* an empty queue may mean idle fetchers: make them look again */
		if (consumed_since_wakeup > 0)
			KafkaWakeFetchers();
		return false;
	}
	consumed_since_wakeup += m->len + m->key_len;
	if (consumed_since_wakeup >= wakeup_bytes)
		KafkaWakeFetchers();

	if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR && !KafkaIsMessageError(m->err))
	{
		/* consumer-level event: log it, nothing to store */
		if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET)
			ereport(WARNING,
					(errmsg("clickstream consumer %d: %s[%d]: %s",
							my_consumer, my_topic, m->partition,
							rd_kafka_message_errstr(m)),
					 errdetail("The stored position is no longer in Kafka (retention); consumption restarts at the earliest retained offset.")));
		else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
			ereport(WARNING,
					(errmsg("clickstream consumer %d: Kafka reported %s: %s",
							my_consumer, rd_kafka_err2name(m->err),
							rd_kafka_message_errstr(m))));
		if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
			StatusWorkerError(my_consumer, m->partition, "%s: %s",
							  rd_kafka_err2name(m->err), rd_kafka_message_errstr(m));
		rd_kafka_message_destroy(m);
		return false;
	}

	if (m->partition < 0 || m->offset < 0)
	{
		ereport(WARNING,
				(errmsg("clickstream consumer %d: ignoring a message without coordinates (partition %d, offset %lld)",
						my_consumer, (int) m->partition, (long long) m->offset)));
		rd_kafka_message_destroy(m);
		return false;
	}

	current = m;
	for (int i = 0; i < nassigned; i++)
		if (assigned[i] == m->partition)
			delivered[i] = true;
	if (brokers_down)
	{
		brokers_down = false;
		StatusWorkerSetState(my_consumer, WORKER_CONSUMING);
	}

	memset(msg, 0, sizeof(KafkaMessage));
	msg->partition = m->partition;
	msg->offset = m->offset;
	msg->timestamp_ms = rd_kafka_message_timestamp(m, &tstype);
	if (tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
		msg->timestamp_ms = -1;
	msg->key = m->key;
	msg->key_len = m->key_len;
	if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
		msg->error = rd_kafka_message_errstr(m);	/* m->payload is that text */
	else
	{
		msg->payload = m->payload;
		msg->payload_len = m->len;
		KafkaFillHeaders(m, msg);
	}
	return true;
}

/* Commit next offsets to the group, asynchronously, after a PostgreSQL commit. */
void
KafkaCommit(const KafkaPosition *positions, int n)
{
	rd_kafka_topic_partition_list_t *list;

	if (kafka == NULL || n == 0)
		return;
	list = rd_kafka_topic_partition_list_new(n);
	for (int i = 0; i < n; i++)
		rd_kafka_topic_partition_list_add(list, my_topic,
										  positions[i].partition)->offset = positions[i].offset;
	(void) rd_kafka_commit(kafka, list, 1);
	rd_kafka_topic_partition_list_destroy(list);
}

/* Restart a partition at offset (after another consumer moved it). */
void
KafkaSeek(int32 partition, int64 offset)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
	rd_kafka_error_t *error;

	rd_kafka_topic_partition_list_add(list, my_topic, partition)->offset = offset;
	error = rd_kafka_seek_partitions(kafka, list, 5000);
	if (error != NULL)
	{
		ereport(WARNING,
				(errmsg("clickstream consumer %d could not seek %s[%d] to " INT64_FORMAT ": %s",
						my_consumer, my_topic, partition, offset,
						rd_kafka_error_string(error))));
		rd_kafka_error_destroy(error);
	}
	rd_kafka_topic_partition_list_destroy(list);
}

/* Restart a partition at the earliest offset Kafka has. */
void
KafkaSeekBeginning(int32 partition)
{
	KafkaSeek(partition, RD_KAFKA_OFFSET_BEGINNING);
}

/*
 * Pause fetching the assigned partitions, or resume those paused.  A paused
 * partition fetches nothing and its prefetched messages are dropped
 * (librdkafka discards them at the next poll), so a worker that cannot
 * write holds no more than its batch; resuming fetches again from the
 * offset after the last message KafkaPoll() returned, librdkafka's
 * application position.  That position is only the partition's own once it
 * has delivered a message since it was assigned (before, it may be left
 * from an earlier assignment), so a partition that has not is not paused
 * yet: the next call after its first message pauses it.
 */
void
KafkaPauseAll(bool pause)
{
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_resp_err_t err;

	if (kafka == NULL || nassigned == 0)
		return;
	list = rd_kafka_topic_partition_list_new(nassigned);
	for (int i = 0; i < nassigned; i++)
	{
		if (pause ? (paused[i] || !delivered[i]) : !paused[i])
			continue;
		rd_kafka_topic_partition_list_add(list, my_topic, assigned[i]);
		paused[i] = pause;
	}
	if (list->cnt > 0)
	{
		err = pause ? rd_kafka_pause_partitions(kafka, list)
			: rd_kafka_resume_partitions(kafka, list);
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
			ereport(WARNING,
					(errmsg("clickstream consumer %d could not %s its partitions: %s",
							my_consumer, pause ? "pause" : "resume",
							rd_kafka_err2str(err))));
	}
	rd_kafka_topic_partition_list_destroy(list);
}

/*
 * Ask the partition leaders for the high watermark (log end offset) of each
 * of the n partitions, waiting at most timeout_ms; highs[i] is -1 where no
 * answer came.  Independent of fetching: it works with paused partitions
 * and while no batch is written.  Returns false when nothing was answered.
 */
bool
KafkaQueryHighWatermarks(const int32 *partitions, int n, int64 *highs,
						 int timeout_ms)
{
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_resp_err_t err;
	bool		any = false;

	for (int i = 0; i < n; i++)
		highs[i] = -1;
	if (kafka == NULL || n == 0 || brokers_down)
		return false;
	list = rd_kafka_topic_partition_list_new(n);
	for (int i = 0; i < n; i++)
		rd_kafka_topic_partition_list_add(list, my_topic,
										  partitions[i])->offset = RD_KAFKA_OFFSET_END;
	/* a ListOffsets request for the latest offset, answered by each leader */
	err = rd_kafka_offsets_for_times(kafka, list, timeout_ms);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		for (int i = 0; i < list->cnt; i++)
		{
			rd_kafka_topic_partition_t *tp = &list->elems[i];

			if (tp->err != RD_KAFKA_RESP_ERR_NO_ERROR || tp->offset < 0)
				continue;
			for (int j = 0; j < n; j++)
				if (partitions[j] == tp->partition)
				{
					highs[j] = tp->offset;
					any = true;
				}
		}
	}
	rd_kafka_topic_partition_list_destroy(list);
	return any;
}

/* High watermark of a partition as last seen in a fetch, -1 if unknown. */
int64
KafkaHighWatermark(int32 partition)
{
	int64_t		low,
				high;

	if (kafka == NULL ||
		rd_kafka_get_watermark_offsets(kafka, my_topic, partition, &low, &high) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return -1;
	return high;
}

/*
 * Leave the group and destroy the consumer.  The revoke hook runs from
 * rd_kafka_consumer_close(); with every broker down there is no group to
 * leave, so the close is skipped rather than waited for.
 */
void
KafkaClose(void)
{
	if (kafka == NULL)
		return;
	if (current != NULL)
	{
		rd_kafka_message_destroy(current);
		current = NULL;
	}
	KafkaForgetOptionsFile(&options_file_used, &options_file_used_len);
	if (brokers_down)
		rd_kafka_destroy_flags(kafka, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	else
	{
		rd_kafka_consumer_close(kafka);
		rd_kafka_destroy(kafka);
	}
	kafka = NULL;
	nassigned = 0;
}
