/*
 * tokpool.c: tokenizer threads, so a 128k-token prompt (tens of
 * milliseconds of BPE) never stalls the loop that serves every other
 * connection.
 *
 * Jobs go into one FIFO under a mutex and condition variable; a thread runs
 * gw_prompt_tokenize() and hands the finished job back to the loop with
 * kvf_loop_post() (an eventfd wakeup), where job->done runs. The loop does
 * not touch a job's prompt until it comes back, so the prompt and its JSON
 * are read by one thread at a time. Short prompts are tokenized inline by
 * the caller (gateway.tokenize_inline_bytes): the handoff costs more than
 * they do.
 */
#include "gateway/gw.h"

#include <pthread.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_time.h"

struct gw_tokpool {
	kvf_loop *loop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	gw_tokjob *head, *tail;
	int stop;
	int nthreads;
	pthread_t th[];
};

static void job_back(kvf_loop *loop, kvf_task *task)
{
	gw_tokjob *job = task->arg;
	job->done(job, job->ud);
}

static void *worker(void *arg)
{
	gw_tokpool *p = arg;
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->head && !p->stop)
			pthread_cond_wait(&p->cv, &p->mu);
		gw_tokjob *job = p->head;
		if (!job) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		p->head = job->next;
		if (!p->head)
			p->tail = NULL;
		pthread_mutex_unlock(&p->mu);
		uint64_t t0 = kvf_now_ns();
		job->rc = gw_prompt_tokenize(job->prompt, job->tok);
		job->ns = kvf_now_ns() - t0;
		job->task.fn = job_back;
		job->task.arg = job;
		kvf_loop_post(p->loop, &job->task);
	}
}

int gw_tokpool_new(kvf_loop *loop, int nthreads, gw_tokpool **out)
{
	if (nthreads < 1)
		nthreads = 1;
	gw_tokpool *p = kvf_calloc(1, sizeof(*p) + (size_t)nthreads * sizeof(pthread_t));
	if (!p)
		return KVF_E_NOMEM;
	p->loop = loop;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	for (int i = 0; i < nthreads; i++) {
		if (pthread_create(&p->th[i], NULL, worker, p)) {
			p->nthreads = i;
			gw_tokpool_destroy(p);
			return kvf_errf(KVF_E_NOMEM, "tokenizer threads: cannot start thread %d", i);
		}
	}
	p->nthreads = nthreads;
	*out = p;
	return 0;
}

void gw_tokpool_destroy(gw_tokpool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->th[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	kvf_free(p);
}

void gw_tokpool_submit(gw_tokpool *p, gw_tokjob *job)
{
	job->next = NULL;
	pthread_mutex_lock(&p->mu);
	if (p->tail)
		p->tail->next = job;
	else
		p->head = job;
	p->tail = job;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}
