/*
 * kdfpool.c — see kdfpool.h.
 *
 * One mutex guards both queues, the outstanding count and the stop flag;
 * workers sleep on one condition variable. Workers never call back: they
 * append to the done-queue and add 1 to the eventfd, which stays readable
 * (level-triggered) until the loop's drain reads it. `outstanding` counts
 * jobs from submit to delivery and is only lowered on the loop thread.
 */
#include "kdfpool.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <openssl/crypto.h>

struct job {
	struct job *next;
	bool is_hash;
	char *pw;                       /* copy, NULL if len out of bounds */
	size_t len;
	char *stored;                   /* verify only */
	struct password_params params;  /* hash only */
	kdfpool_verify_fn vdone;
	kdfpool_hash_fn hdone;
	void *arg;
	int result;
	char hash[PASSWORD_HASH_MAX];
};

struct queue {
	struct job *head, *tail;
};

struct kdfpool {
	loop_t *loop;
	int efd;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct queue todo, done;
	size_t outstanding;
	bool stopping;
	pthread_t threads[KDFPOOL_MAX_THREADS];
	int nthreads;
};

static void queue_push(struct queue *q, struct job *j)
{
	j->next = NULL;
	if (q->tail != NULL)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
}

static struct job *queue_take_all(struct queue *q)
{
	struct job *all = q->head;
	q->head = q->tail = NULL;
	return all;
}

/* Wipes the password copy as soon as it is no longer needed. */
static void job_wipe_password(struct job *j)
{
	if (j->pw != NULL) {
		OPENSSL_cleanse(j->pw, j->len);
		free(j->pw);
		j->pw = NULL;
	}
}

static void job_free(struct job *j)
{
	job_wipe_password(j);
	free(j->stored);
	free(j);
}

/* Calls the job's callback with result, then frees it. Loop thread only. */
static void job_deliver(struct job *j, int result)
{
	if (j->is_hash)
		j->hdone(result, result == 0 ? j->hash : NULL, j->arg);
	else
		j->vdone(result, j->arg);
	job_free(j);
}

static void job_run(struct job *j)
{
	if (j->pw == NULL)
		j->result = -1;  /* length was out of bounds at submit */
	else if (j->is_hash)
		j->result = password_hash(j->pw, j->len, &j->params, j->hash, sizeof j->hash);
	else
		j->result = password_verify(j->pw, j->len, j->stored);
	job_wipe_password(j);
}

static void *worker_main(void *arg)
{
	kdfpool_t *p = arg;
	const uint64_t one = 1;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stopping && p->todo.head == NULL)
			pthread_cond_wait(&p->cv, &p->mu);
		/* Stopping: leave queued jobs to kdfpool_free. */
		if (p->stopping)
			break;
		struct job *j = p->todo.head;
		p->todo.head = j->next;
		if (p->todo.head == NULL)
			p->todo.tail = NULL;
		pthread_mutex_unlock(&p->mu);

		job_run(j);

		pthread_mutex_lock(&p->mu);
		queue_push(&p->done, j);
		/* Only fails with EAGAIN at a counter of 2^64-2: already readable. */
		ssize_t n = write(p->efd, &one, sizeof one);
		(void)n;
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Loop callback on the eventfd: delivers every finished job. */
static void kdfpool_drain(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)loop, (void)zsock, (void)revents;
	kdfpool_t *p = arg;
	uint64_t count;

	/* Nonblocking; EAGAIN just means an earlier drain already read it. */
	ssize_t n = read(fd, &count, sizeof count);
	(void)n;

	pthread_mutex_lock(&p->mu);
	struct job *list = queue_take_all(&p->done);
	for (struct job *j = list; j != NULL; j = j->next)
		p->outstanding--;
	pthread_mutex_unlock(&p->mu);

	/* Unlocked: a callback may submit new jobs. */
	while (list != NULL) {
		struct job *next = list->next;
		job_deliver(list, list->result);
		list = next;
	}
}

/* Starts up to n workers with every signal blocked (the loop handles them). */
static void start_workers(kdfpool_t *p, int n)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (int i = 0; i < n; i++) {
		int err = pthread_create(&p->threads[p->nthreads], NULL, worker_main, p);
		if (err != 0) {
			log_warn("kdfpool.thread_failed", "error=%s", log_quote(strerror(err)));
			break;
		}
		p->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

kdfpool_t *kdfpool_new(loop_t *loop, int threads)
{
	if (loop == NULL)
		return NULL;
	if (threads <= 0)
		threads = KDFPOOL_DEFAULT_THREADS;
	if (threads > KDFPOOL_MAX_THREADS)
		threads = KDFPOOL_MAX_THREADS;

	kdfpool_t *p = xcalloc(1, sizeof *p);
	p->loop = loop;
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->efd < 0) {
		log_warn("kdfpool.eventfd_failed", "error=%s", log_quote(strerror(errno)));
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (loop_add_fd(loop, p->efd, ZMQ_POLLIN, kdfpool_drain, p) < 0) {
		log_warn("kdfpool.watch_failed", "fd=%d", p->efd);
		kdfpool_free(&p);
		return NULL;
	}
	start_workers(p, threads);
	/* Without a worker no job would ever finish. */
	if (p->nthreads == 0) {
		kdfpool_free(&p);
		return NULL;
	}
	return p;
}

void kdfpool_free(kdfpool_t **pp)
{
	kdfpool_t *p = *pp;
	if (p == NULL)
		return;
	*pp = NULL;

	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	loop_remove(p->loop, NULL, p->efd);
	close(p->efd);

	/* Threads are gone: no lock needed. stopping makes callbacks' submits fail. */
	struct job *done = queue_take_all(&p->done);
	struct job *todo = queue_take_all(&p->todo);
	while (done != NULL) {
		struct job *next = done->next;
		job_deliver(done, done->result);
		done = next;
	}
	while (todo != NULL) {
		struct job *next = todo->next;
		job_deliver(todo, -1);
		todo = next;
	}
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* Copies the password (if in bounds) into a new job. */
static struct job *job_new(const char *password, size_t len, void *arg)
{
	struct job *j = xcalloc(1, sizeof *j);
	j->arg = arg;
	j->len = len;
	if (password != NULL && len >= PASSWORD_MIN_LEN && len <= PASSWORD_MAX_LEN) {
		j->pw = xmalloc(len);
		memcpy(j->pw, password, len);
	}
	return j;
}

/* Queues j, or frees it (no callback) and returns -1 when full or stopping. */
static int job_submit(kdfpool_t *p, struct job *j)
{
	pthread_mutex_lock(&p->mu);
	if (p->stopping || p->outstanding >= KDFPOOL_MAX_JOBS) {
		pthread_mutex_unlock(&p->mu);
		job_free(j);
		return -1;
	}
	p->outstanding++;
	queue_push(&p->todo, j);
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

int kdfpool_verify(kdfpool_t *p, const char *password, size_t len, const char *stored,
		kdfpool_verify_fn done, void *arg)
{
	if (p == NULL || stored == NULL || done == NULL)
		return -1;
	struct job *j = job_new(password, len, arg);
	/* Longer than any valid stored string: keep a bounded prefix, verify says -1. */
	j->stored = xstrndup(stored, PASSWORD_HASH_MAX);
	j->vdone = done;
	return job_submit(p, j);
}

int kdfpool_hash(kdfpool_t *p, const char *password, size_t len,
		const struct password_params *params, kdfpool_hash_fn done, void *arg)
{
	if (p == NULL || params == NULL || done == NULL)
		return -1;
	struct job *j = job_new(password, len, arg);
	j->is_hash = true;
	j->params = *params;
	j->vdone = NULL;
	j->hdone = done;
	return job_submit(p, j);
}
