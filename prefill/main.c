/* kvf-prefill: the prefill worker daemon (see worker/kvf_worker.h). */
#include "worker/kvf_worker.h"

int main(int argc, char **argv)
{
	return kvf_worker_main(KVF_WORKER_PREFILL, argc, argv);
}
