/* kvf-decode: the decode worker daemon (see worker/kvf_worker.h). */
#include "worker/kvf_worker.h"

int main(int argc, char **argv)
{
	return kvf_worker_main(KVF_WORKER_DECODE, argc, argv);
}
