/*
 * kvf_cluster.h: the `cluster {}` configuration section every daemon reads:
 * what the whole cluster must agree on (the block-key secret, the block size,
 * where the cachedir replicas are).
 */
#ifndef KVF_CLUSTER_H
#define KVF_CLUSTER_H

#include <stdint.h>

#include "common/kvf_config.h"

typedef struct kvf_cluster_cfg {
	char *secret;          /* keyed-hash secret for block keys */
	int64_t block_size;    /* tokens per KV block */
	kvf_strlist cachedir;  /* "host:port" of every cachedir replica */
	char *node_name;       /* this node's name in logs and ids ("" = hostname) */
} kvf_cluster_cfg;

extern const kvf_cfg_section kvf_cluster_section;

#endif
