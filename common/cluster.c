/*
 * cluster.c: key table of the `cluster {}` section. The secret has no safe
 * default for production: the default keeps a loopback demo working and the
 * daemons warn when it is left unchanged.
 */
#include "common/kvf_cluster.h"

#include "common/kvf_err.h"

static const kvf_cfg_key cluster_keys[] = {
	KVF_CFG_KEY(kvf_cluster_cfg, secret, STRING, "kvfabric-demo-secret", 0, 0, NULL,
		    "secret keying the block-key hash; the same on every daemon of the cluster "
		    "(the default is for demos: set your own)"),
	KVF_CFG_KEY(kvf_cluster_cfg, block_size, INT, "16", 1, 1024, NULL,
		    "tokens per KV block; one value for the whole cluster"),
	KVF_CFG_KEY(kvf_cluster_cfg, cachedir, STRLIST, "127.0.0.1:7700", 0, 0, NULL,
		    "host:port of every cachedir replica (workers publish to all, readers fail over); "
		    "empty: no cluster directory (a standalone worker, a gateway with static workers)"),
	KVF_CFG_KEY(kvf_cluster_cfg, node_name, STRING, "", 0, 0, NULL,
		    "name of this node in worker ids and logs (empty: the hostname)"),
};

static int cluster_validate(const void *st)
{
	const kvf_cluster_cfg *c = st;
	if (!c->secret || !c->secret[0])
		return kvf_errf(KVF_E_CONFIG, "cluster.secret must not be empty");
	return 0; /* an empty cachedir list runs without the cluster directory */
}

const kvf_cfg_section kvf_cluster_section = {
	"cluster", "Settings the whole cluster shares", cluster_keys, KVF_CFG_NKEYS(cluster_keys),
	cluster_validate, sizeof(kvf_cluster_cfg),
};
