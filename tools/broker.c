/*-------------------------------------------------------------------------
 *
 * broker.c
 *	  A local Kafka broker for tests and demos, built on librdkafka's mock
 *	  cluster.
 *
 * The mock cluster lives inside an otherwise unused rd_kafka_t handle and
 * speaks the Kafka protocol on localhost, so kcat, librdkafka clients and
 * the clickstream worker can all use it.  One topic is created up front.
 * The bootstrap address ("127.0.0.1:PORT[,...]") is printed as a single
 * line on stdout once the cluster is ready; the program then runs until
 * SIGTERM or SIGINT.
 *
 * Usage:
 *	  tools/broker [--topic NAME] [--partitions N] [--brokers N]
 *				   [--pidfile PATH]
 *
 *	  --topic NAME		topic to create (default "clickstream")
 *	  --partitions N	its partition count (default 8)
 *	  --brokers N		number of mock brokers (default 1)
 *	  --pidfile PATH	write the process id to PATH (removed at exit)
 *
 * Signals:
 *	  SIGUSR1			take all brokers down (connections are closed and
 *						refused); prints "broker: down" on stderr
 *	  SIGUSR2			bring all brokers back up; prints "broker: up"
 *	  SIGTERM, SIGINT	destroy the cluster and exit 0
 *
 * Limits: the mock broker keeps only about 5 MiB (and 100 000 record
 * batches) of log per partition (older ones are dropped: a consumer that
 * subscribes later starts above offset 0), and it supports no admin API.
 * It finds a fetch's offset by walking the partition's list of record
 * batches, so producers of many small batches cost it CPU in proportion to
 * that list (tools/eventgen lingers 100 ms for this).
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static volatile sig_atomic_t stop_requested = 0;
static volatile sig_atomic_t change_pending = 0;
static volatile sig_atomic_t want_down = 0;

/* Print the usage text to the given stream. */
static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: broker [--topic NAME] [--partitions N] [--brokers N] [--pidfile PATH]\n"
			"Runs a local mock Kafka cluster and prints its bootstrap address.\n"
			"SIGUSR1: all brokers down, SIGUSR2: all up, SIGTERM/SIGINT: exit.\n");
}

/* Parse a positive int command-line value or exit with an error. */
static int
parse_positive(const char *opt, const char *value)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0' || v < 1 || v > INT_MAX)
	{
		fprintf(stderr, "broker: invalid value for --%s: \"%s\"\n", opt, value);
		exit(2);
	}
	return (int) v;
}

/* Signal handler: only record what was asked for. */
static void
on_signal(int signo)
{
	if (signo == SIGUSR1 || signo == SIGUSR2)
	{
		/* the last signal wins, even if both arrive within one tick */
		want_down = (signo == SIGUSR1);
		change_pending = 1;
	}
	else
		stop_requested = 1;
}

/* Install on_signal for the signals the broker reacts to. */
static void
install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR1);
	sigaddset(&sa.sa_mask, SIGUSR2);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* Take every broker of the cluster down, or bring every one back up. */
static rd_kafka_resp_err_t
set_all_brokers(rd_kafka_mock_cluster_t *mc, int nbrokers, bool down)
{
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

	/* mock broker ids are 1..nbrokers */
	for (int id = 1; id <= nbrokers; id++)
	{
		rd_kafka_resp_err_t e;

		e = down ? rd_kafka_mock_broker_set_down(mc, id)
			: rd_kafka_mock_broker_set_up(mc, id);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
			err = e;
	}
	return err;
}

/* Write our pid to path; exit with an error if that fails. */
static void
write_pidfile(const char *path)
{
	FILE	   *f = fopen(path, "w");

	if (f == NULL || fprintf(f, "%ld\n", (long) getpid()) < 0 || fclose(f) != 0)
	{
		fprintf(stderr, "broker: cannot write pid file \"%s\": %s\n",
				path, strerror(errno));
		exit(1);
	}
}

/* Remove the pid file unless another instance has rewritten it since. */
static void
remove_pidfile(const char *path)
{
	FILE	   *f = fopen(path, "r");
	long		pid = -1;

	if (f == NULL)
		return;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = -1;
	fclose(f);
	if (pid == (long) getpid())
		unlink(path);
}

/* Start the cluster, serve until asked to stop, then tear it down. */
int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"topic", required_argument, NULL, 't'},
		{"partitions", required_argument, NULL, 'p'},
		{"brokers", required_argument, NULL, 'b'},
		{"pidfile", required_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	const char *topic = "clickstream";
	const char *pidfile = NULL;
	int			partitions = 8;
	int			nbrokers = 1;
	int			c;
	char		errstr[512];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *mc;
	rd_kafka_resp_err_t err;
	struct timespec tick = {0, 50 * 1000 * 1000};

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 't':
				if (optarg[0] == '\0')
				{
					fprintf(stderr, "broker: --topic must not be empty\n");
					return 2;
				}
				topic = optarg;
				break;
			case 'p':
				partitions = parse_positive("partitions", optarg);
				break;
			case 'b':
				nbrokers = parse_positive("brokers", optarg);
				break;
			case 'f':
				pidfile = optarg;
				break;
			case 'h':
				usage(stdout);
				return 0;
			default:
				usage(stderr);
				return 2;
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "broker: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}

	install_signals();

	/*
	 * The handle only hosts the mock cluster and never connects anywhere;
	 * warnings such as "no bootstrap.servers configured" are noise here.
	 */
	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		fprintf(stderr, "broker: %s\n", errstr);
		return 1;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, "broker: cannot create Kafka handle: %s\n", errstr);
		return 1;
	}

	mc = rd_kafka_mock_cluster_new(rk, nbrokers);
	if (mc == NULL)
	{
		fprintf(stderr, "broker: cannot create mock cluster\n");
		rd_kafka_destroy(rk);
		return 1;
	}

	err = rd_kafka_mock_topic_create(mc, topic, partitions, 1);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		fprintf(stderr, "broker: cannot create topic \"%s\": %s\n",
				topic, rd_kafka_err2str(err));
		rd_kafka_mock_cluster_destroy(mc);
		rd_kafka_destroy(rk);
		return 1;
	}

	if (pidfile != NULL)
		write_pidfile(pidfile);

	printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
	fflush(stdout);

	while (!stop_requested)
	{
		nanosleep(&tick, NULL);

		if (change_pending)
		{
			bool		down;

			change_pending = 0;
			down = want_down;
			err = set_all_brokers(mc, nbrokers, down);
			if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
				fprintf(stderr, "broker: cannot set brokers %s: %s\n",
						down ? "down" : "up", rd_kafka_err2str(err));
			else
				fprintf(stderr, "broker: %s\n", down ? "down" : "up");
		}
	}

	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(rk);
	if (pidfile != NULL)
		remove_pidfile(pidfile);
	return 0;
}
